from meowcli.main import main

main()
