"""``python -m ipsolve`` (what ``accelerate launch -m ipsolve`` and ``torchrun -m ipsolve`` run)."""
from ipsolve.cli import main

if __name__ == "__main__":
    main()
