"""spendmeter's sidecar proxy: meters, prices and labels every LLM API call a pod makes."""

from spendmeter_proxy.usage import Reading, Usage

__all__ = ["Reading", "Usage"]
