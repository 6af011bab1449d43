from commine.scripts.cli import main

# Guarded: the web UI's child processes (spawned) import the main module again under another name.
if __name__ == "__main__":
    main()
