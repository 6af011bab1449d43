from commine.scripts.cli import main

main()
