"""The lab's tests reuse the library's tiny offline models and data builders."""

from tests.models.conftest import image_folder, tiny_base, tiny_sd, write_class_folder  # noqa: F401
