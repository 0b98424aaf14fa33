"""ukrun's exceptions. Every message names the problem and, where one exists, the fix. The hot verbs import
this module: no `from __future__` here, whose import is a module of its own (0.3 ms of every call)."""


class UkrunError(Exception):
    """Base of every error ukrun reports to a user."""


class PlanError(UkrunError):
    """What the container asks for cannot run; the message names the fix."""


class ConfigError(UkrunError):
    """The configuration file or a flag is wrong."""


class ContainerdError(UkrunError):
    """containerd refused or failed a request."""


class ContainerdUnavailable(ContainerdError):
    """containerd cannot be reached at the configured address, or it is not containerd."""


class NotFound(ContainerdError):
    pass


class AlreadyExists(ContainerdError):
    pass


class FailedPrecondition(ContainerdError):
    pass


class InvalidArgument(ContainerdError):
    pass


class SnapshotterNotLoaded(ContainerdError):
    pass


class NamespaceMissing(ContainerdError):
    pass


class ImageError(UkrunError):
    """The image's content is unusable: a bad urunc.json, a missing or unsafe artifact path."""


class UnsafePath(ImageError):
    """A path inside an image would leave the image's root filesystem."""


class MissingInImage(ImageError):
    """A path names nothing in the image."""


class HostError(UkrunError):
    """A host operation (mount, umount, loop device) failed."""


class VolumeBusy(HostError):
    """A block volume that something else still uses: refused, and left mounted (or mounted again) as it was."""
