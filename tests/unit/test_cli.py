"""The command line: global flags anywhere, as kubectl takes them."""

from netlab import cli


def test_lab_is_taken_after_the_command_too():
    for argv in (["--lab", "x", "scale", "deployment/web", "--replicas", "5"],
                 ["scale", "deployment/web", "--lab", "x", "--replicas", "5"],
                 ["scale", "deployment/web", "--replicas", "5", "--lab=x"]):
        args = cli._parser().parse_args(cli._global_flags_first(argv))
        assert (args.lab, args.command, args.target, args.replicas) == ("x", "scale", "deployment/web", 5)


def test_what_follows_a_double_dash_is_the_pods_command():
    argv = cli._global_flags_first(["exec", "client", "--lab", "x", "--", "tool", "--lab", "y"])
    assert argv == ["--lab", "x", "exec", "client", "--", "tool", "--lab", "y"]

