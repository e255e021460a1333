from medsae.cli import main

main()
