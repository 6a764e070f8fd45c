"""A Java app trusts the proxy through the truststore and JAVA_TOOL_OPTIONS the injection gives it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from spendmeter_operator.mutation import CA_DIR, JAVA_TRUST
from spendmeter_proxy.demo import running_proxy
from spendmeter_proxy.standin import StandIn

JAVA_APP = """
import java.net.*;
import java.io.*;
import java.nio.charset.StandardCharsets;

public class App {
    public static void main(String[] args) throws Exception {
        URL url = new URL("https://api.openai.com/v1/chat/completions");
        HttpURLConnection c = (HttpURLConnection) url.openConnection();
        c.setRequestMethod("POST");
        c.setDoOutput(true);
        c.setRequestProperty("content-type", "application/json");
        c.setRequestProperty("authorization", "Bearer sk-java-test");
        byte[] body = "{\\"model\\":\\"gpt-4o\\",\\"messages\\":[{\\"role\\":\\"user\\",\\"content\\":\\"hi\\"}]}"
            .getBytes(StandardCharsets.UTF_8);
        c.getOutputStream().write(body);
        System.out.println(c.getResponseCode() + " " + c.getHeaderField("x-spendmeter-cost-status")
            + " " + c.getHeaderField("x-spendmeter-model"));
    }
}
"""


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime on this machine")
def test_java_app_trusts_the_proxy_through_the_truststore(tmp_path: Path) -> None:
    app = tmp_path / "App.java"
    app.write_text(JAVA_APP)
    with StandIn(tls_dir=tmp_path / "provider-tls") as standin, running_proxy(tmp_path, standin) as (port, _):
        # Exactly what the injection gives every app container, with the CA folder where this test has it.
        java_options = JAVA_TRUST.replace(CA_DIR, str(tmp_path / "ca"))
        argv = ["java", "-Dhttps.proxyHost=127.0.0.1", f"-Dhttps.proxyPort={port}", str(app)]
        env = {k: v for k, v in os.environ.items() if k != "JAVA_TOOL_OPTIONS"}
        trusted = subprocess.run(argv, env={**env, "JAVA_TOOL_OPTIONS": java_options},
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        untrusted = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.split() == ["200", "priced", "gpt-4o"]
    # Without the truststore the proxy's certificate is rejected: the trust really comes from the store.
    assert untrusted.returncode != 0 and "PKIX path building failed" in untrusted.stderr
