"""medsae.evaluate"""
