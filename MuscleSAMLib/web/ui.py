"""The page: a side panel (image, box prompt, uncertainty, review, corrections, export, learning) and the views.

Widgets only: every button is one controller method; every value lives in the ``msam_*`` state.
``data-testid`` attributes name what the browser tests click and read.
"""

from __future__ import annotations

from typing import Any

from .box_overlay import CSS as BOX_CSS

CSS = BOX_CSS + """
.msam-panel .v-card-title { font-size: 0.95rem; padding-bottom: 0; }
.msam-legend-bar { height: 12px; border-radius: 2px; border: 1px solid #555; }
.msam-queue td, .msam-queue th { font-size: 0.75rem !important; padding: 0 6px !important; height: 24px !important; }
.msam-views { position: absolute; inset: 0; display: flex; }
.msam-panel .v-btn--disabled { opacity: 0.35 !important; }
.msam-queue tbody tr { cursor: pointer; }
.msam-queue tbody tr:hover { background: rgba(255,255,255,0.08); }
.msam-path { overflow-wrap: anywhere; }  /* paths break after a / or -, not mid-word */
.msam-cursor { position: absolute; left: 48px; bottom: 52px; z-index: 2; pointer-events: none; color: #eee;
               font: 12px monospace; text-shadow: 0 0 3px #000; }
"""


# Keyboard shortcuts, caught before any widget (capture phase) so a focused muscle picker never eats
# them; only typing into a text field keeps its keys. Ctrl+Z undoes; arrows and Page keys step slices
# (not while a slider has the focus).
KEYS = ("b", "c", "d", "e", "v", "s", "p", "n", "escape", "arrowup", "arrowdown", "arrowleft", "arrowright",
        "pageup", "pagedown", "[", "]")
KEYS_JS = ("window.addEventListener('keydown', (e) => { const t = e.target; if (e.altKey || !t) return; "
           "const typing = t.tagName === 'TEXTAREA' || t.isContentEditable || (t.tagName === 'INPUT' && !t.readOnly && "
           "!(t.closest && t.closest('.v-select')) && ['text', 'number', 'search', 'password', 'email', 'url'].includes(t.type)); "
           "if (typing) return; let k = e.key.toLowerCase(); "
           "if (e.ctrlKey || e.metaKey) { if (k !== 'z') return; k = 'ctrl+z'; } "
           "else if (!" + repr(list(KEYS)) + ".includes(k)) return; "
           "if (k.startsWith('arrow') && t.closest && t.closest('[role=slider], .v-slider')) return; "
           "e.preventDefault(); e.stopPropagation(); trigger('msam_key', [k]); }, true)")
# The cursor read-out: where the mouse is over the axial view, at most ~8 times a second.
CURSOR_JS = ("window.addEventListener('pointermove', (e) => { const l = window.document.querySelector('[data-testid=box-layer]'); "
             "if (!l) return; const r = l.getBoundingClientRect(); const fx = (e.clientX - r.left) / r.width, "
             "fy = (e.clientY - r.top) / r.height; if (fx < 0 || fx > 1 || fy < 0 || fy > 1) return; "
             "const now = Date.now(); if (window.msamCursorAt && now - window.msamCursorAt < 120) return; "
             "window.msamCursorAt = now; trigger('msam_cursor', [fx, fy, r.width, r.height]); })")


def _tid(name: str) -> list[str]:
    return [f'data-testid="{name}"']


def build_page(server: Any, ctrl: Any, views: Any) -> Any:
    """Build the page for controller ``ctrl`` and the Slicer views ``views``; returns the layout."""
    from trame.ui.vuetify3 import VAppLayout  # noqa: PLC0415
    from trame.widgets import client, html  # noqa: PLC0415
    from trame.widgets import vuetify3 as v  # noqa: PLC0415

    with VAppLayout(server, full_height=True, theme="dark") as layout:
        client.Style(CSS)
        client.ClientTriggers(mounted=KEYS_JS + "; " + CURSOR_JS)  # keyboard shortcuts, cursor read-out
        with v.VAppBar(density="compact", elevation=1):
            html.Div("MuscleSAM", classes="text-h6 mx-4")
            v.VChip("{{ msam_image || 'no image' }}", size="small", classes="mr-2", raw_attrs=_tid("image-name"))
            v.VChip("{{ msam_ensemble || 'ensemble loading ...' }}", size="small", classes="mr-2")
            v.VChip("CPU: predictions are slower", v_if=("msam_on_cpu",), color="warning", size="small", classes="mr-2")
            v.VChip("{{ msam_clients }} tabs share this session: each can draw (boxes land where drawn), all see the same scene", v_if=("msam_clients > 1",),
                    color="info", size="small", classes="mr-2", raw_attrs=_tid("tabs-warning"))
            v.VSpacer()
            v.VChip("Research use only - not for clinical use", size="small", variant="outlined", classes="mr-2")
        with v.VNavigationDrawer(permanent=True, width=390, classes="msam-panel"):
            _messages(v, html)
            _image_panel(v, html, ctrl)
            _prompt_panel(v, html, ctrl)
            _correction_panel(v, html, ctrl)
            _export_panel(v, html, ctrl)
            _uncertainty_panel(v, html)
            _review_panel(v, html, ctrl)
            _segments_panel(v, html, ctrl)
            _learning_panel(v, html, ctrl)
        with v.VMain(), html.Div(style="position: relative; height: 100%;"):
            with html.Div(classes="msam-views"):
                views.layout_manager.initialize_layout_grid(layout)
            html.Div("{{ msam_cursor }}", classes="msam-cursor", raw_attrs=_tid("cursor"))
        _confirm_dialog(v, html, ctrl)
    return layout


def _messages(v: Any, html: Any) -> None:
    with html.Div(classes="pa-2", style="position: sticky; top: 0; z-index: 2; background: rgb(var(--v-theme-surface));"):
        v.VAlert(text=("msam_message.text",), type=("msam_message.type",), density="compact", variant="tonal",
                 raw_attrs=_tid("message"))
        with html.Div(v_if=("msam_busy",), classes="mt-2", raw_attrs=_tid("progress")):
            v.VProgressLinear(indeterminate=True, color="primary", height=6)
            html.Div("{{ msam_busy_text }}", classes="text-caption")


def _confirm_dialog(v: Any, html: Any, ctrl: Any) -> None:
    with v.VDialog(model_value=("msam_confirm !== null",), persistent=True, max_width=460):
        with v.VCard(raw_attrs=_tid("confirm")):
            v.VCardTitle("Discard unsaved corrections?")
            v.VCardText("{{ msam_confirm && msam_confirm.text }}")
            with v.VCardActions():
                v.VSpacer()
                v.VBtn("Keep working", click="msam_confirm = null", raw_attrs=_tid("confirm-keep"))
                v.VBtn("Discard and open", color="error", click=(ctrl.open_image, "[msam_confirm.path, true]"),
                       raw_attrs=_tid("confirm-discard"))


def _image_panel(v: Any, html: Any, ctrl: Any) -> None:
    with v.VCard(flat=True, classes="mb-1"):
        v.VCardTitle("Image")
        with v.VCardText(classes="pb-1"):
            with v.VBtnToggle(v_model=("msam_window",), mandatory=True, density="compact", divided=True, variant="outlined",
                              classes="mb-1", raw_attrs=_tid("window")):
                for preset, title in (("auto", "Auto"), ("muscle", "Muscle"), ("bright", "Bright"), ("full", "Full")):
                    v.VBtn(title, value=preset, size="x-small")
            html.Div("Window/level: a preset, or drag in a view with the View tool.", classes="text-caption mb-1")
            v.VTextField(v_model=("msam_image_request", ""), label="Path of an image on the server", density="compact",
                         hide_details=True, clearable=True, raw_attrs=_tid("image-path"))
            with v.VRow(dense=True, classes="mt-1"):
                with v.VCol():
                    v.VBtn("Open", block=True, size="small", disabled=("msam_busy",),
                           click=(ctrl.open_image, "[msam_image_request]"), raw_attrs=_tid("open-image"))
                with v.VCol():
                    v.VBtn("Sample", block=True, size="small", variant="tonal", disabled=("msam_busy",),
                           click=(ctrl.open_image, "['']"), raw_attrs=_tid("open-sample"))


def _prompt_panel(v: Any, html: Any, ctrl: Any) -> None:
    with v.VCard(flat=True, classes="mb-1"):
        v.VCardTitle("Box prompt")
        with v.VCardText(classes="pb-1"):
            with html.Div(classes="d-flex align-center"):
                v.VIcon("mdi-square-rounded", color=("msam_label_color",), classes="mr-2")
                v.VSelect(v_model=("msam_label",), items=("msam_muscles",), item_title="title", item_value="value",
                          label="Muscle", density="compact", hide_details=True, raw_attrs=_tid("muscle"))
            with v.VBtnToggle(v_model=("msam_tool",), mandatory=True, density="compact", divided=True,
                              variant="outlined", classes="mt-2 d-flex"):
                v.VBtn("Box", value="box", prepend_icon="mdi-selection-drag", size="small", raw_attrs=_tid("tool-box"))
                v.VBtn("Click", value="click", prepend_icon="mdi-plus-circle-outline", size="small", raw_attrs=_tid("tool-click"))
                v.VBtn("Paint", value="paint", prepend_icon="mdi-brush", size="small", raw_attrs=_tid("tool-paint"))
                v.VBtn("Erase", value="erase", prepend_icon="mdi-eraser", size="small", raw_attrs=_tid("tool-erase"))
                v.VBtn("View", value="navigate", prepend_icon="mdi-cursor-default", size="small", raw_attrs=_tid("tool-view"))
            html.Div("{{ {box: 'Box: drag from corner to corner of the muscle on the axial view.', "
                     "click: 'Click: on the axial view, left click = this is the muscle (green +), Shift+click or right "
                     "click = this is not (red -); each click corrects the chosen muscle on that slice at once.', "
                     "paint: 'Paint: drag over any view to add voxels to the chosen muscle (locked muscles are spared).', "
                     "erase: 'Erase: drag over any view to remove voxels of the chosen muscle.', "
                     "navigate: 'View: drag to change window/level, right-drag to zoom, middle-drag to pan.'}[msam_tool] }} "
                     "Wheel or arrow keys: next slice, Page Up/Down: 5 slices. Keys: B box, C click, D paint, E erase, V view, "
                     "S segment, P propagate, N next uncertain, Esc cancel, [ ] brush size, Ctrl+Z undo.",
                     classes="text-caption mt-1", raw_attrs=_tid("tool-hint"))
            with html.Div(classes="mt-1", raw_attrs=_tid("boxes")):
                v.VChip("{{ b.abbrev }} slice {{ b.slice }} ({{ b.size }})", v_for="b in msam_boxes", key="b_index",
                        color=("b.color",), size="x-small", classes="mr-1")
            with v.VRow(dense=True, classes="mt-1"):
                with v.VCol(cols=4):
                    v.VBtn("Segment [S]", color="primary", block=True, size="small", click=ctrl.segment,
                           disabled=("!msam_ready || msam_busy || !msam_boxes.length",), raw_attrs=_tid("segment"))
                with v.VCol(cols=4):
                    v.VBtn("Propagate [P]", block=True, size="small", click=ctrl.propagate,
                           disabled=("!msam_ready || msam_busy",), raw_attrs=_tid("propagate"))
                with v.VCol(cols=4):
                    v.VBtn("Cancel [Esc]", color="error", variant="tonal", block=True, size="small", click=ctrl.cancel,
                           disabled=("!msam_busy",), raw_attrs=_tid("cancel"))
            v.VBtn("Clear boxes", variant="text", size="x-small", click=ctrl.clear_boxes, disabled=("!msam_boxes.length",))
            _click_row(v, html, ctrl)


def _click_row(v: Any, html: Any, ctrl: Any) -> None:
    """Undo click and the suggested next click, under the box prompt (the Click tool's own controls)."""
    with v.VRow(dense=True, classes="mt-1 align-center"):
        with v.VCol(cols=5):
            v.VBtn("Undo click ({{ msam_clicks }})", block=True, size="small", variant="tonal", click=ctrl.undo_click,
                   disabled=("!msam_clicks || msam_busy",), prepend_icon="mdi-undo", raw_attrs=_tid("undo-click"))
        with v.VCol(cols=7):
            v.VSwitch(v_model=("msam_suggest",), label="Suggest next click", density="compact", hide_details=True,
                      color="warning", disabled=("!msam_has_result",), raw_attrs=_tid("suggest"))
    html.Div("Yellow star: the most uncertain place of {{ msam_muscles.find(m => m.value === msam_label)?.abbrev }} on "
             "this slice: click there next.", v_if=("msam_suggest && msam_suggested",), classes="text-caption",
             raw_attrs=_tid("suggest-hint"))
    html.Div("No suggestion on this slice: the chosen muscle was not segmented here, or nothing is uncertain.",
             v_if=("msam_suggest && !msam_suggested && msam_has_result",), classes="text-caption")


def _uncertainty_panel(v: Any, html: Any) -> None:
    with v.VCard(flat=True, classes="mb-1"):
        v.VCardTitle("Uncertainty")
        with v.VCardText(classes="pb-1"):
            v.VSwitch(v_model=("msam_heat_visible",), label="Show heatmap over the MRI", density="compact",
                      hide_details=True, color="primary", disabled=("!msam_has_result",), raw_attrs=_tid("heat-visible"))
            with v.VBtnToggle(v_model=("msam_heat_kind",), mandatory=True, density="compact", divided=True,
                              variant="outlined", disabled=("!msam_has_result",), raw_attrs=_tid("heat-kind")):
                for kind in ("total", "epistemic", "aleatoric"):
                    v.VBtn(kind, value=kind, size="small")
            v.VSlider(v_model=("msam_heat_opacity_ui", 0.5), end="msam_heat_opacity = $event", min=0, max=1, step=0.05,
                      label="Opacity", density="compact", hide_details=True, thumb_label=True, disabled=("!msam_has_result",),
                      raw_attrs=_tid("heat-opacity"))
            v.VSlider(v_model=("msam_heat_threshold_ui", 0.05), end="msam_heat_threshold = $event", min=0, max=0.6,
                      step=0.01, label="Hide below", density="compact", hide_details=True, thumb_label=True,
                      disabled=("!msam_has_result",), raw_attrs=_tid("heat-threshold"))
            with html.Div(v_if=("msam_has_result",), raw_attrs=_tid("legend")):
                html.Div(classes="msam-legend-bar", style=("{background: msam_legend.gradient}",))
                with html.Div(classes="d-flex text-caption"):
                    html.Span("0 (certain)")
                    v.VSpacer()
                    html.Span("{{ msam_legend.title }}")
                    v.VSpacer()
                    html.Span("{{ msam_legend.max }}")


def _review_panel(v: Any, html: Any, ctrl: Any) -> None:
    with v.VCard(flat=True, classes="mb-1", raw_attrs=_tid("review-panel")):
        v.VCardTitle("Review")
        with v.VCardText(classes="pb-1"):
            v.VBtn("Next most uncertain [N] ({{ msam_remaining }} left)", block=True, size="small", click=ctrl.next_uncertain,
                   disabled=("!msam_has_result || msam_busy",), raw_attrs=_tid("next-uncertain"))
            with v.VTable(density="compact", classes="msam-queue mt-1", height=160, fixed_header=True,
                          v_if=("msam_queue.length",)):
                with html.Thead(), html.Tr():
                    for title, tip in (("#", "rank: most uncertain first"), ("slice", "axial slice"), ("muscle", ""),
                                       ("nats", "mean uncertainty (entropy in nats; 0 = certain, 0.69 = a coin toss)"),
                                       ("exp. DSC", "expected Dice overlap of this mask with the truth, from the ensemble"),
                                       ("ml", "this muscle's volume on this slice (millilitres)")):
                        html.Th(title, title=tip)
                with html.Tbody(), html.Tr(v_for="row in msam_queue", key="row.rank", click=(ctrl.review_row, "[row.rank]"),
                                           raw_attrs=['data-testid="review-row"']):
                    for col in ("rank", "slice", "muscle", "uncertainty (nats)", "expected DSC", "slice volume (ml)"):
                        html.Td(f"{{{{ row['{col}'] }}}}")
            html.Div("Click a row to go there (yellow marker). nats: uncertainty, 0 = certain; exp. DSC: expected "
                     "overlap with the truth.", classes="text-caption", v_if=("msam_queue.length",))


def _correction_panel(v: Any, html: Any, ctrl: Any) -> None:
    with v.VCard(flat=True, classes="mb-1", raw_attrs=_tid("correct-panel")):
        v.VCardTitle("Correct")
        with v.VCardText(classes="pb-1"):
            v.VSlider(v_model=("msam_brush",), min=1, max=20, step=0.5, label="Brush (% of view) [ ]", density="compact",
                      hide_details=True, thumb_label=True, raw_attrs=_tid("brush"))
            with v.VRow(dense=True):
                with v.VCol(cols=6):
                    v.VBtn("Undo stroke [Ctrl+Z]", block=True, size="small", variant="tonal", click=ctrl.undo,
                           disabled=("!msam_has_result",), raw_attrs=_tid("undo"))
                with v.VCol(cols=6):
                    v.VBtn("Undo run", block=True, size="small", variant="tonal", click=ctrl.undo_run,
                           disabled=("!msam_can_undo_run || msam_busy",), raw_attrs=_tid("undo-run"))
                with v.VCol(cols=6):
                    v.VBtn("Clear muscle on slice", block=True, size="small", variant="tonal", click=ctrl.clear_on_slice,
                           disabled=("!msam_has_result || msam_busy",), raw_attrs=_tid("clear-slice"))
                with v.VCol(cols=6):
                    v.VBtn("{{ msam_locked ? 'Unlock muscle' : 'Mark finished' }}", block=True, size="small",
                           variant="tonal", click=ctrl.toggle_lock, disabled=("!msam_has_result",), raw_attrs=_tid("lock"))


def _segments_panel(v: Any, html: Any, ctrl: Any) -> None:
    with v.VCard(flat=True, classes="mb-1", raw_attrs=_tid("segments-panel")):
        v.VCardTitle("Muscles")
        with v.VCardText(classes="pb-1"):
            v.VSlider(v_model=("msam_seg_opacity",), min=0, max=1, step=0.05, label="Fill opacity", density="compact",
                      hide_details=True, thumb_label=True, disabled=("!msam_segments.length",), raw_attrs=_tid("seg-opacity"))
            with html.Div(v_for="m in msam_segments", key="m.label", classes="d-flex align-center",
                          raw_attrs=['data-testid="segment-row"']):
                v.VIcon("mdi-square-rounded", color=("m.color",), size="small", classes="mr-1")
                html.Span("{{ m.abbrev }}", classes="text-body-2 mr-1", style="min-width: 3em;")
                html.Span("{{ m.voxels }} vox{{ m.locked ? ', locked' : '' }}", classes="text-caption")
                v.VSpacer()
                v.VBtn(icon=("m.visible ? 'mdi-eye' : 'mdi-eye-off'",), size="x-small", variant="text",
                       click=(ctrl.segment_visibility, "[m.label, !m.visible]"), raw_attrs=['data-testid="segment-eye"'])
                v.VBtn(icon="mdi-delete", size="x-small", variant="text", disabled=("m.locked || msam_busy",),
                       click=(ctrl.delete_muscle, "[m.label]"), raw_attrs=['data-testid="segment-delete"'])
            html.Div("No muscle yet.", v_if=("!msam_segments.length",), classes="text-caption")


def _export_panel(v: Any, html: Any, ctrl: Any) -> None:
    with v.VCard(flat=True, classes="mb-1"):
        v.VCardTitle("Export")
        with v.VCardText(classes="pb-1"):
            v.VBtn("Export corrected labels", color="secondary", block=True, size="small", click=ctrl.export,
                   disabled=("msam_busy",), raw_attrs=_tid("export"))
            v.VBtn("Download zip ({{ msam_export.size }})", v_if=("msam_export",), href=("msam_export.url",), block=True,
                   size="small", color="success", classes="mt-2", prepend_icon="mdi-download",
                   raw_attrs=[*_tid("download"), "download"])
            html.Div("{{ msam_export.name.replaceAll('-', '-\u200b') }}", v_if=("msam_export",), classes="text-caption msam-path")
            html.Div("Bundles are saved on the server in {{ msam_export_folder.replaceAll('/', '/\u200b') }}",
                     classes="text-caption mt-1 msam-path")


def _learning_panel(v: Any, html: Any, ctrl: Any) -> None:
    with v.VCard(flat=True, classes="mb-1"):
        v.VCardTitle("Learn from corrections")
        with v.VCardText(classes="pb-1"):
            html.Div("Fine-tunes the current ensemble (kind decoder) on the {{ msam_learn_bundles }} bundle(s) exported "
                     "in this session, in the background; the result is a new ensemble in the manifest.",
                     classes="text-caption mb-1")
            with v.VRow(dense=True):
                with v.VCol(cols=8):
                    v.VBtn("Learn from corrections", color="primary", variant="tonal", block=True, size="small",
                           click=ctrl.learn, disabled=("!msam_learn_bundles || msam_learn_running",),
                           prepend_icon="mdi-school", raw_attrs=_tid("learn"))
                with v.VCol(cols=4):
                    v.VTextField(v_model=("msam_learn_steps",), label="Steps", type="number", density="compact",
                                 hide_details=True, disabled=("msam_learn_running",), raw_attrs=_tid("learn-steps"))
            with html.Div(v_if=("msam_learn_running",), classes="mt-2", raw_attrs=_tid("learn-progress")):
                v.VProgressLinear(model_value=("msam_learn_fraction",), color="primary", height=8)
                html.Div("{{ msam_learn_fraction }}% {{ msam_learn_text }}", classes="text-caption",
                         style="word-break: break-word;", raw_attrs=_tid("learn-text"))
                v.VBtn("Cancel learning", color="error", variant="tonal", block=True, size="small", classes="mt-1",
                       click=ctrl.cancel_learning, raw_attrs=_tid("learn-cancel"))
            with html.Div(v_if=("msam_learn_result",), classes="mt-2", raw_attrs=_tid("learn-result")):
                html.Div("New ensemble {{ msam_learn_result.name }} ({{ msam_learn_result.version }}): "
                         "{{ msam_learn_result.summary }}", classes="text-caption", style="word-break: break-word;")
                v.VBtn("Switch to it", color="success", block=True, size="small", classes="mt-1",
                       click=ctrl.use_learned, disabled=("msam_busy",), raw_attrs=_tid("learn-switch"))
