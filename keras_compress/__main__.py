"""``python -m keras_compress {export,decode,inspect} ...``: see ``keras_compress.deploy.cli``."""

import sys

from keras_compress.deploy.cli import main

sys.exit(main())
