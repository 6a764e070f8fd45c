"""Allows ``python -m spendmeter_proxy``."""

from spendmeter_proxy.cli import main

raise SystemExit(main())
