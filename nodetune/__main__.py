from nodetune.cli import main

main()
