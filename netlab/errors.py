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
