"""medsae.serve"""
