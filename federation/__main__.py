from federation.cli.main import main

main()
