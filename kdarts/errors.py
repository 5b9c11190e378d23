"""Exception hierarchy of kdarts: every error meant for a user derives from KdartsError."""


class KdartsError(Exception):
    """Base class of the errors that kdarts reports to users as one clear line."""


class PlanError(KdartsError):
    """An architecture plan, alphas file or plan conversion input is invalid."""


class DataError(KdartsError):
    """A dataset is missing, unreadable or inconsistent."""


class SearchError(KdartsError):
    """A search could not start, resume or finish."""


class CheckpointError(SearchError):
    """A checkpoint is missing, corrupt or does not match the search it should resume."""


class SpecError(KdartsError):
    """A kernel spec is invalid."""


class RenderError(KdartsError):
    """A kernel bundle could not be rendered."""


class BackendError(KdartsError):
    """A backend failed to push, follow or fetch a kernel or dataset."""
