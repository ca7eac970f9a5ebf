from rgdiff.cli.app import main

main()
