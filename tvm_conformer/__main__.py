import sys

from tvm_conformer.cli import main

sys.exit(main())
