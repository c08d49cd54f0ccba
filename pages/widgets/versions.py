"""The admin page's models trained here: each model's versions with their scores, promote and roll back, and a
version compared with its parent (maps and confusion matrices)."""

from pathlib import Path

import streamlit as st

from core.accounts import Account, audit
from core.errors import AppError
from models import versions
from models.catalogue import Catalogue
from pages.widgets.formatting import local_time


def version_rows(found: dict) -> list[dict[str, object]]:
    """One row per version: its state, when and by whom it was trained, from what, and its validation score next to
    its parent's."""
    rows = []
    for version, (card, _, state) in found.items():
        validation, parent = card.metrics.get("validation"), card.metrics.get("parent_validation")
        rows.append(
            {
                "version": version,
                "state": state,
                "trained": local_time(card.training.get("trained_at")),
                "by": card.training.get("by", ""),
                "base": card.training.get("base", ""),
                "val macro F1": round(validation["macro_f1"], 3) if isinstance(validation, dict) else None,
                "parent's": round(parent["macro_f1"], 3) if isinstance(parent, dict) else None,
            }
        )
    return rows


def model_versions(model_id: str, found: dict, cards: Catalogue, account: Account, admin_dir: Path) -> None:
    """One model trained here: its classes, its versions, promote a version or roll back, and the comparison."""
    rows = version_rows(found)
    with st.container(border=True):
        production = cards.get(model_id)
        st.markdown(f"**{model_id}** ({production.task}): {', '.join(c.name for c in production.classes)}")
        st.dataframe(rows, hide_index=True, use_container_width=True)
        left, right = st.columns(2)
        candidates = [v for v, (_, _, state) in found.items() if state != "production"]
        chosen = left.selectbox("Version", candidates, key=f"version-{model_id}", disabled=not candidates)
        model_dir = cards.folder(model_id).parent
        if left.button("Promote to production", key=f"promote-{model_id}", disabled=not candidates):
            st.session_state[f"pending-{model_id}"] = ("promote", str(chosen))
        if right.button("Roll back", key=f"rollback-{model_id}"):
            st.session_state[f"pending-{model_id}"] = ("rollback", "")
        if done := st.session_state.pop(f"done-{model_id}", None):
            st.success(done)
        if pending := st.session_state.get(f"pending-{model_id}"):  # asked right under the buttons
            confirm_change(model_id, model_dir, found, pending, account, admin_dir)
        compare_with_parent(found, key=model_id)


def score_of(found: dict, version: str) -> float | None:
    """A version's validation macro F1 (None when it has none)."""
    validation = found[version][0].metrics.get("validation") if version in found else None
    return float(validation["macro_f1"]) if isinstance(validation, dict) else None


def change_question(model_id: str, found: dict, action: str, version: str) -> str:
    """What a promotion or a rollback will do, with a warning when the new production version scores lower."""
    current = next((v for v, (_, _, state) in found.items() if state == "production"), None)
    if action == "rollback":
        return (
            f"Roll {model_id} back from version {current} to the version in production before it? Jobs "
            "submitted from now on use that one."
        )
    question = f"Promote {model_id} version {version} to production? Jobs submitted from now on use it"
    new, old = score_of(found, version), score_of(found, current) if current else None
    if new is not None and old is not None and new < old:
        return f"{question}, and it scores lower than version {current} (macro F1 {new:.3f} against {old:.3f})."
    return question + "."


def confirm_change(
    model_id: str, model_dir: Path, found: dict, pending: tuple[str, str], account: Account, admin_dir: Path
) -> None:
    """Ask before a promotion or a rollback acts; then do it, audit it and say so."""
    action, version = pending
    st.warning(change_question(model_id, found, action, version))
    yes, no = st.columns(2)
    if no.button("Cancel", key=f"cancel-change-{model_id}"):
        del st.session_state[f"pending-{model_id}"]
        st.rerun()
    if not yes.button(
        "Promote" if action == "promote" else "Roll back", key=f"confirm-{model_id}", type="primary"
    ):
        return
    del st.session_state[f"pending-{model_id}"]
    try:
        if action == "promote":
            versions.promote(model_dir, version, by=account.name)
            audit(admin_dir, account.name, f"promoted {model_id} version {version}")
            done = f"{model_id} version {version} is in production."
        else:
            record = versions.rollback(model_dir, by=account.name)
            audit(admin_dir, account.name, f"rolled back {model_id}")
            done = f"{model_id} is back on version {record.production}."
    except AppError as err:
        st.error(str(err))
        return
    st.session_state[f"done-{model_id}"] = done
    st.rerun()


def confusion_table(metrics: dict, title: str) -> None:
    """A confusion matrix (rows: true, columns: predicted) with the class names."""
    names = [c["name"] for c in metrics.get("per_class", [])]
    rows = metrics.get("confusion", [])
    if not names or len(rows) != len(names):
        st.caption(f"{title}: no confusion matrix was recorded.")
        return
    st.caption(
        f"{title}: {metrics.get('samples', 0):,} held-out samples, macro F1 {metrics.get('macro_f1', 0):.3f}"
    )
    st.dataframe(
        [
            {"true \\ predicted": n, **dict(zip(names, row, strict=True))}
            for n, row in zip(names, rows, strict=True)
        ],
        hide_index=True,
    )


def validation_maps(maps: Path, training_date: str) -> None:
    """The validation area on the training date: the version's map, its parent's and the validation blocks'
    labels (runs on labels over imagery write them)."""
    if not (maps / "candidate.png").is_file():
        return
    st.caption(
        f"The validation area on the training date ({training_date}): this version, its "
        "parent, and the validation blocks' labels."
    )
    for column, name in zip(st.columns(3), ("candidate", "parent", "validation"), strict=True):
        if (maps / f"{name}.png").is_file():
            column.image(str(maps / f"{name}.png"), use_container_width=True)


def compare_with_parent(found: dict, key: str) -> None:
    """The chosen version's confusion matrix next to its parent's, on the same held-out samples, and both
    maps of the validation area (for runs on labels over imagery)."""
    with st.expander("Compare a version with its parent (maps and confusion matrices)"):
        versions_found = list(found)
        version = st.selectbox(
            "Version to compare",
            versions_found,
            index=len(versions_found) - 1,
            key=f"compare-{key}-{len(found)}",
        )  # the newest (a new version resets the choice to it): usually the one to judge
        card = found[version][0]
        validation_maps(found[version][1].parent / "maps", card.training.get("date", ""))
        for ours, theirs in (("validation", "parent_validation"), ("held_out", "base_on_held_out")):
            if isinstance(card.metrics.get(ours), dict):  # one above the other: side by side cut them off
                confusion_table(card.metrics[ours], f"{key}@{version}")
                if isinstance(card.metrics.get(theirs), dict):
                    confusion_table(card.metrics[theirs], f"its parent {card.training.get('base', '')}")
                else:
                    st.caption("The parent's classes do not match these; it was not scored.")
                return
        st.caption("This version has no held-out scores.")
