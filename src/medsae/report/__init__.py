"""medsae.report"""
