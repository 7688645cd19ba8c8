"""`python -m pipeline.sweep`: the command line of the local sweep runner."""

from pipeline.sweep.runner import main

if __name__ == "__main__":
    main()
