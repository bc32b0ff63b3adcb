from meowd.main import main

main()
