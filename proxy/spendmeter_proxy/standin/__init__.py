"""A local stand-in for the LLM providers: a TLS (or plain) HTTP/1.1 server that replays recorded
exchanges, synthesizes provider-correct answers, and plays scripted errors and faults.

Tests, ``spendmeter demo`` and the benchmark talk to it instead of the real APIs (there is no network).
"""

from spendmeter_proxy.standin.exchanges import Exchange, load_exchanges, parse_exchange
from spendmeter_proxy.standin.messages import Answer, Received, Request, parse_request
from spendmeter_proxy.standin.rules import Fault, Reply, Rule, parse_rules
from spendmeter_proxy.standin.serving import SAMPLE_HEADER, StandIn

__all__ = [
    "SAMPLE_HEADER",
    "Answer",
    "Exchange",
    "Fault",
    "Received",
    "Reply",
    "Request",
    "Rule",
    "StandIn",
    "load_exchanges",
    "parse_exchange",
    "parse_request",
    "parse_rules",
]
