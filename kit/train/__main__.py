"""`python -m kit.train` / `accelerate launch -m kit.train` / `torchrun -m kit.train`: `kit train`'s
arguments, one process per rank."""
import sys

from kit.cli.train import train_main
from kit.train import end_distributed

try:
    code = train_main(sys.argv[1:])
finally:
    end_distributed()
sys.exit(code)
