from hackagent_otel._cli import main
import sys

sys.exit(main())
