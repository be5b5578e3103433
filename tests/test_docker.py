"""docker/ cannot run here (no engine): check what can be checked by reading it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_two_replicas_redis_with_aof_and_a_proxy():
    services = compose()["services"]
    assert set(services) == {"redis", "server1", "server2", "proxy"}
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    assert services["redis"]["healthcheck"]["test"][-1] == "ping"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    for name in ("server1", "server2"):
        s = services[name]
        assert s["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert re.fullmatch(
            r"redis://:\$\{VIBESCOPE_REDIS_PASSWORD:\?[^}]*\}@redis:6379/0", s["environment"]["VIBESCOPE_REDIS_URL"]
        )
        assert "VIBESCOPE_TOKEN" in s["environment"]  # replicas listen beyond loopback
        assert s["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["proxy"]["ports"] == ["8765:8765"]
    assert set(services["proxy"]["depends_on"]) == {"server1", "server2"}
    assert any(v.startswith("./nginx.conf:") for v in services["proxy"]["volumes"])


def test_redis_needs_a_password_cannot_evict_live_sessions_and_is_unreachable_from_the_proxy():
    c = compose()
    redis = c["services"]["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--requirepass") + 1].startswith("${VIBESCOPE_REDIS_PASSWORD:?")
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--maxmemory" in cmd
    assert c["networks"]["internal"]["internal"] is True
    assert redis["networks"] == ["internal"] and "ports" not in redis
    assert "internal" not in c["services"]["proxy"]["networks"]
    for name in ("server1", "server2"):
        assert set(c["services"][name]["networks"]) == {"public", "internal"}
        assert "ports" not in c["services"][name]  # only the proxy is published


def test_the_server_image_runs_as_an_unprivileged_user():
    lines = [line.strip() for line in (DOCKER / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert lines.index(f"USER {users[-1]}") > max(
        i for i, line in enumerate(lines) if line.startswith("RUN make install")
    )


def test_the_proxy_passes_the_client_address_and_documents_tls():
    conf = (DOCKER / "nginx.conf").read_text()
    assert conf.count("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;") >= 2
    assert "# server {" in conf and "listen 8443 ssl" in conf  # the commented TLS example
    assert compose()["services"]["server1"]["environment"]["VIBESCOPE_TRUST_FORWARDED"] == "1"


def test_every_volume_and_dependency_is_declared():
    c = compose()
    named = set(c.get("volumes", {}))
    for s in c["services"].values():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            assert src.startswith("./") and (DOCKER / src).exists() or src in named
        deps = s.get("depends_on", {})
        assert set(deps) <= set(c["services"])


def test_proxy_routes_a_session_to_one_replica_and_upgrades_websockets():
    conf = (DOCKER / "nginx.conf").read_text()
    assert re.search(r"map \$arg_session \$route_key", conf)
    assert "hash $route_key consistent" in conf
    assert "server server1:8765" in conf and "server server2:8765" in conf
    assert "proxy_set_header Upgrade $http_upgrade" in conf
    assert conf.count("{") == conf.count("}")


def test_dockerfile_installs_what_make_run_installs():
    steps = [line.strip() for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("RUN")]
    assert any(re.match(r"RUN make install\b", s) for s in steps)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: \$\(VENV\)/\.installed$", makefile, re.M)
    assert re.search(r"^install: \$\(VENV\)/\.installed$", makefile, re.M)
    cmd = [line for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("CMD")][-1]
    assert "vibescope" in cmd and "serve" in cmd
    copied = " ".join(line for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("COPY"))
    for needed in ("pyproject.toml", "requirements-nodeps.txt", "Makefile", "vibescope", "server", "stream", "models"):
        assert needed in copied


def test_readme_gives_exactly_the_two_setup_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", readme.split("## Set up", 1)[1].split("\n## ", 1)[0], re.S)
    assert [b.strip() for b in blocks] == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
