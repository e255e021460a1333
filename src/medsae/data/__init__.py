"""medsae.data"""
