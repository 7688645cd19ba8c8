"""`python -m pipeline.study`: the command line of the whole study."""

from pipeline.study.study import main

if __name__ == "__main__":
    main()
