from ukrun.fast import main

main()
