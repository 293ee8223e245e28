"""The pipeline's stages, one module each, and `STAGES`, the one ordered registry of them::

    seed            seed.py            the seed problems (GSM8K + MATH train)               -> seed/
    augment         augment.py         K rounds of solution rewriting (+ MetaMath, metamath.py) -> augmented/
    back_translate  back_translate.py  a new question from each augmented solution           -> back_translated/
    solve           solve.py           code-integrated solutions, code run in the Sandbox    -> solved/
    verify          verify.py          answer consistency + code-based verification          -> verified/
    decontaminate   decontaminate.py   drop questions that overlap the eval sets             -> decontaminated/

Each module declares one `mathgenie.generation.stage.Stage` (name, input stage, output, features, config class, run
function, whether it needs an engine or a Sandbox, what its config hash covers, its Hub name and card text). The
pipeline, the Ray executor, the push, the cards, the funnel and ``mathgenie run --stages`` are derived from this
registry. To add a stage, write a module like these, give `PipelineConfig` a field for its config, and add its
``STAGE`` here; or, without touching mathgenie, pass ``stages=[*STAGES, MY_STAGE]`` to `Pipeline` / `run_on_ray`.
"""

from __future__ import annotations

from mathgenie.generation.stage import Stage, check_registry
from mathgenie.generation.stages import augment, back_translate, decontaminate, seed, solve, verify

STAGES: tuple[Stage, ...] = check_registry(
    [seed.STAGE, augment.STAGE, back_translate.STAGE, solve.STAGE, verify.STAGE, decontaminate.STAGE])

PUSH = "push"  # not a stage: the step after the last one that publishes every stage with a Hub name


def stage_named(name: str, stages: tuple[Stage, ...] = STAGES) -> Stage:
    for stage in stages:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; expected one of {[s.name for s in stages]}")


__all__ = ["PUSH", "STAGES", "Stage", "stage_named"]
