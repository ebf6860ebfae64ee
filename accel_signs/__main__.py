"""`python -m accel_signs` and `accelerate launch -m accel_signs`."""

from accel_signs.cli import main

if __name__ == "__main__":
    main()
