"""Builder of the distillation teacher: SAM's image encoder with its official weights.

Apart from :mod:`fsdino.models.build` so that what the teacher cache runs (this file, the teacher, the
checkpoint reader) is all its DVC stage depends on: an edit of the student or the decoder leaves it alone.
"""

from __future__ import annotations

from fsdino.checkpoints import load_sam_image_encoder
from fsdino.config import TeacherConfig
from fsdino.models.seeding import seeded
from fsdino.models.teacher import SamTeacher, build_sam_image_encoder

#: Seed of the random initialisation of a teacher without checkpoint (demo, tests): every process
#: builds the same one.
RANDOM_TEACHER_SEED = 0


def build_teacher(config: TeacherConfig) -> SamTeacher:
    """SAM's image encoder for distillation, from the official checkpoint when one is given."""
    with seeded(RANDOM_TEACHER_SEED):
        encoder = build_sam_image_encoder(config.arch, config.image_size)
    if config.checkpoint is not None:
        load_sam_image_encoder(encoder, config.checkpoint, config.sha256)
    return SamTeacher(encoder, config.image_size)
