"""medsae.sae"""
