from ukrun.cli import main

main()
