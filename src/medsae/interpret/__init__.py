"""medsae.interpret"""
