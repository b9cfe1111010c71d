"""Errors a person can act on: each says what is wrong in one sentence."""


class NetlabError(Exception):
    """A failure the CLI prints as one sentence and a non-zero exit, never a traceback."""


class SpecError(NetlabError):
    """A lab file or manifest is wrong: names the file, the object and the field."""

    def __init__(self, file, obj, field, message):
        self.file, self.obj, self.field, self.message = file, obj, field, message
        where = ": ".join(str(p) for p in (file, obj, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class EnvironmentProblem(NetlabError):
    """The machine lacks something netlab needs (root, a kernel feature, a tool)."""


class LabNotFound(NetlabError):
    pass


class StateUnreadable(NetlabError):
    """A lab's state file cannot be read: not JSON, not a lab's state, or written by a newer
    netlab. Names the file and what is wrong; the lab can still be removed by its name prefix."""

    def __init__(self, path, problem, lab=None):
        self.path, self.problem, self.lab = path, problem, lab
        hint = f"; `netlab cleanup {lab}` removes the lab by its name prefix" if lab else ""
        super().__init__(f"{path} cannot be read: {problem}{hint}")
