"""Push a trained model with its model card (base model, datasets at their commits, hyper-parameters, loss summary)
through `mathgenie.upload.push_model`, tagged so ``from_pretrained(repo, revision=tag)`` gets exactly this model."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_SUMMARIES = {
    "mathgenie-lm": "MathGenieLM: `{base}` fine-tuned on code-integrated (LCE) solutions and verification rationales "
    "(the training mix is under Training hyper-parameters: `mix`); loss on the assistant's text and code blocks only, "
    "execution outputs masked (MathCoder's rule).",
    "mcode": "M_code, MathGenie's candidate-solution generator and verifier: `{base}` fine-tuned on code-integrated "
    "(LCE) solutions and (question, solution) → verification-rationale samples in one run; loss on the assistant's "
    "text and code blocks only, execution outputs masked (MathCoder's rule). An intermediate model of the data "
    "pipeline (solve and verify stages).",
    "backtranslation": "A MathGenie question back-translation model (M_backtrans): `{base}` fine-tuned to turn a "
    "solution into a new problem (`Create a New Problem based on the Solution: ...` → `New Problem: ...`); loss on "
    "the completion only. It is an intermediate model of the data pipeline, not a solver.",
}


def push_trained_model(result, config):
    """``result``: a `recipes.TrainResult`; ``config``: its recipe config. Returns the `PushResult`."""
    from mathgenie.cards import render_model_card
    from mathgenie.upload import push_model

    hub_sources = [s for s in result.sources if s.revision is not None]
    local_sources = [s.name for s in result.sources if s.revision is None]
    params = {"recipe": config.recipe, "base_model_revision": result.base_model.revision or "local folder",
              **result.hyperparameters}
    if local_sources:
        params["local_datasets"] = local_sources
    mixed = [s for s in result.sources if s.mix]
    if mixed:  # one line per source of the training mix, with the samples it gave (not the config's dicts)
        params["mix"] = "; ".join(f"{s.mix['name']}: {s.name} ({s.mix['kind']}, weight {s.mix['weight']}) -> "
                                  f"{s.mix['samples']} samples" for s in mixed)
    card = render_model_card(
        repo_id=config.push_repo_id,
        base_model=result.base_model.name,
        datasets=[{"repo_id": s.name, "revision": s.revision, "config": s.config} for s in hub_sources],
        hyperparameters=params,
        train_summary=result.train_summary,
        tags=[config.recipe],
        revision=config.push_tag or config.push_branch,
        summary=_SUMMARIES[config.recipe].format(base=result.base_model.name),
        metadata=_prompt_metadata(result.model_dir),
    )
    push = push_model(
        str(result.model_dir), config.push_repo_id, card=card, branch=config.push_branch, tag=config.push_tag,
        commit_message=f"mathgenie train {config.recipe}: step {result.global_step}",
    )
    logger.info("pushed %s to %s at %s (tag %s)", result.model_dir, config.push_repo_id, push.commit_sha, push.tag)
    return push


def _prompt_metadata(model_dir) -> dict:
    """The model's prompt format (``mathgenie_prompt.json``, back-translation models) for the card's YAML header."""
    from mathgenie.generation import prompt_format

    fmt = prompt_format.load(model_dir)
    return {prompt_format.CARD_KEY: fmt.to_dict()} if fmt is not None else {}
