"""A Java app trusts the proxy through the published truststore, with no change to its code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
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
        store = tmp_path / "ca" / "truststore.p12"
        base = ["java", "-Dhttps.proxyHost=127.0.0.1", f"-Dhttps.proxyPort={port}", str(app)]
        trusted = subprocess.run(
            [*base[:1], f"-Djavax.net.ssl.trustStore={store}", "-Djavax.net.ssl.trustStorePassword=changeit",
             "-Djavax.net.ssl.trustStoreType=PKCS12", *base[1:]],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        untrusted = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.split() == ["200", "priced", "gpt-4o"]
    # Without the truststore the proxy's certificate is rejected: the trust really comes from the store.
    assert untrusted.returncode != 0 and "PKIX path building failed" in untrusted.stderr
