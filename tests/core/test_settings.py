"""build_settings: flags win over env, bad values are refused with a clear message."""

from pathlib import Path

import pytest

from ravend.settings import DEFAULT_OBSERVE_PORT, SettingsError, build_settings


def test_env_only() -> None:
    s = build_settings([], {"NODE_NAME": "n1", "NODE_IP": "10.0.0.5", "KUBECONFIG": "/k"})
    assert (s.node_name, s.node_ip, s.kubeconfig) == ("n1", "10.0.0.5", Path("/k"))
    assert s.observe.port == DEFAULT_OBSERVE_PORT
    assert s.runtime.event_loop == "auto"


def test_flag_wins_over_env() -> None:
    s = build_settings(
        ["--node-name", "flag", "--observe-port", "9000", "--log-format", "json"],
        {"NODE_NAME": "env", "LOG_FORMAT": "text"},
    )
    assert s.node_name == "flag"
    assert s.observe.port == 9000
    assert s.log.format == "json"


def test_no_kubeconfig_means_in_cluster() -> None:
    assert build_settings(["--node-name", "a"], {}).kubeconfig is None


def test_informer_settings_follow_flags_and_env() -> None:
    s = build_settings(["--node-name", "a", "--kubeconfig", "/k"], {})
    assert (s.kube.kubeconfig, s.kube.watch_silence_s) == (Path("/k"), 75.0)
    s = build_settings(["--node-name", "a"], {"RAVEND_WATCH_SILENCE_S": "20"})
    assert s.kube.watch_silence_s == 20.0
    s = build_settings(
        ["--node-name", "a", "--watch-silence", "0"], {"RAVEND_WATCH_SILENCE_S": "9"}
    )
    assert s.kube.watch_silence_s == 0.0


def test_l7_event_loop_follows_flags_and_env() -> None:
    assert build_settings(["--node-name", "a"], {}).runtime.l7_event_loop == "uvloop"
    s = build_settings(["--node-name", "a"], {"RAVEND_L7_EVENT_LOOP": "asyncio"})
    assert s.runtime.l7_event_loop == "asyncio"
    s = build_settings(
        ["--node-name", "a", "--l7-event-loop", "same"], {"RAVEND_L7_EVENT_LOOP": "uvloop"}
    )
    assert s.runtime.l7_event_loop == "same"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "node name is required"),
        (["--node-name", "a", "--node-ip", "not-an-ip"], {}, "not an IP"),
        (["--node-name", "a"], {"RAVEND_OBSERVE_PORT": "99999"}, "not a TCP port"),
        (["--node-name", "a", "--shutdown-deadline", "0"], {}, "must be positive"),
        (["--node-name", "a"], {"LOG_FORMAT": "xml"}, "want text or json"),
        (["--node-name", "a"], {"RAVEND_WATCH_SILENCE_S": "soon"}, "not a number"),
        (["--node-name", "a", "--watch-silence", "-1"], {}, "0 \\(off\\) or positive"),
        (["--node-name", "a"], {"RAVEND_L7_EVENT_LOOP": "trio"}, "want one of same, asyncio"),
    ],
)
def test_bad_values(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        build_settings(argv, env)
