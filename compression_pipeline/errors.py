"""The errors users see. Each one says what was wrong and where."""


class PipelineError(Exception):
    """Base class of every error this project raises on purpose."""


class RecipeError(PipelineError):
    """A recipe file is malformed: names the file, the field, the bad value and what is allowed."""

    def __init__(self, path, location: str, problem: str):
        self.path, self.location, self.problem = str(path), location, problem
        super().__init__(f"recipe {self.path}: {location}: {problem}")


class DatasetError(PipelineError):
    """A dataset could not be read or is unusable: names the file and the problem."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = source, problem
        super().__init__(f"dataset {source}: {problem}")


class ArtifactError(PipelineError):
    """An artifact is missing, corrupt, outside the artifact root, or was never validated."""


class ModelError(PipelineError):
    """A declared model cannot be built or does not fit its data: names the builder (or file) and the problem."""
