import sys

from dashboards.serve import main

sys.exit(main())
