from tallybook.cli import main

main()
