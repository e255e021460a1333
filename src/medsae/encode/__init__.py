"""medsae.encode"""
