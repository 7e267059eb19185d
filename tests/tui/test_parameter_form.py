"""The parameter form's model-dependent controls: SMEA and SMEA DYN exist on V3 models only."""

from __future__ import annotations

from textual.widgets import Select, Switch

from peropix_tui.core.presets import ParameterPreset
from peropix_tui.widgets.parameter_form import ParameterForm

from .helpers import generate_screen, new_app, wait_until

V3 = "nai-diffusion-3"


async def test_smea_rows_follow_the_model_and_reach_the_request() -> None:
    app = new_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: generate_screen(app).side_mounted, "the parameter form")
        form = generate_screen(app).query_one(ParameterForm)
        smea, dyn = form.query_one("#param-smea", Switch), form.query_one("#param-smea-dyn", Switch)
        assert not smea.display and not dyn.display  # V4.5 by default: no SMEA
        form.query_one("#param-model", Select).value = V3
        await pilot.pause()
        assert smea.display and dyn.display
        dyn.value = True  # DYN is a kind of SMEA: it switches SMEA on
        await pilot.pause()
        assert smea.value
        request = form.request("1girl", "")
        assert (request.model, request.smea, request.smea_dyn) == (V3, True, True)
        assert form.parameter_preset("v3").smea_dyn is True
        smea.value = False  # and goes off with it
        await pilot.pause()
        assert not dyn.value
        assert form.apply_parameter_preset(ParameterPreset("dyn", smea=True, smea_dyn=True)) == []
        assert form.request("1girl", "").smea_dyn
        form.query_one("#param-model", Select).value = "nai-diffusion-4-5-full"
        await pilot.pause()
        request = form.request("1girl", "")
        assert not smea.display and (request.smea, request.smea_dyn) == (False, False)
        skipped = form.apply_parameter_preset(ParameterPreset("dyn", smea=True))
        assert skipped and "SMEA" in skipped[0]
