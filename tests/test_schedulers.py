"""Scheduler registry: names people use, the right diffusers class, and refusals before rendering."""
import diffusers
import pytest

from evalkit.errors import EvalkitError
from evalkit.models import scheduler_config_of as config_of
from evalkit.sweep.schedulers import FAMILY_DEFAULTS, SCHEDULERS, build_scheduler, check_compatible, get_scheduler

DEFAULTS = {family: d.schedulers for family, d in FAMILY_DEFAULTS.items()}
REFERENCE = {family: d.reference for family, d in FAMILY_DEFAULTS.items()}

SD_LIKE = config_of(diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                     beta_end=0.012, timestep_spacing="trailing"))
FLOW = config_of(diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))


def test_registry_holds_the_samplers_people_compare():
    required = {"euler", "euler_a", "heun", "dpm2", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_sde_karras", "ddim",
                "pndm", "unipc", "lcm", "flow_euler"}
    assert required <= set(SCHEDULERS.names())


@pytest.mark.parametrize("alias, name", [("DPM++ 2M Karras", "dpmpp_2m_karras"), ("Euler a", "euler_a"),
                                         ("euler-a", "euler_a"), ("UniPC", "unipc")])
def test_display_names_resolve(alias, name):
    assert get_scheduler(alias).name == name


def test_built_scheduler_keeps_the_model_schedule_and_sets_the_solver():
    scheduler = build_scheduler(get_scheduler("dpmpp_2m_karras"), SD_LIKE)
    assert type(scheduler) is diffusers.DPMSolverMultistepScheduler
    assert scheduler.config.use_karras_sigmas is True
    assert scheduler.config.timestep_spacing == "trailing"
    assert scheduler.config.beta_schedule == "scaled_linear"
    plain = build_scheduler(get_scheduler("dpmpp_2m"), dict(scheduler.config))
    assert plain.config.use_karras_sigmas is False


def test_unknown_name_suggests_the_closest():
    with pytest.raises(EvalkitError, match="unknown scheduler 'dpmpp2m': did you mean 'dpmpp_2m'"):
        get_scheduler("dpmpp2m")


def test_family_mismatch_is_refused_both_ways():
    with pytest.raises(EvalkitError, match="scheduler 'flow_euler' \\(flow\\) can't sample m \\(ddpm model\\)"):
        check_compatible(get_scheduler("flow_euler"), SD_LIKE, "m", [4])
    with pytest.raises(EvalkitError, match="can't sample f \\(flow model\\): choose one of flow_euler, "):
        check_compatible(get_scheduler("euler"), FLOW, "f", [4])
    check_compatible(get_scheduler("flow_euler"), FLOW, "f", [1, 4, 50])


def test_a_step_count_the_scheduler_refuses_is_an_error_before_rendering():
    with pytest.raises(EvalkitError, match="scheduler 'lcm' refuses 60 steps"):
        check_compatible(get_scheduler("lcm"), SD_LIKE, "m", [4, 60])


FLUX = config_of(diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                           max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096))


def test_every_flow_solver_passes_the_check_on_a_dynamically_shifted_model():
    """The check calls set_timesteps as FluxPipeline does (sigmas and mu): never a bare count, which FLUX refuses."""
    with pytest.raises(ValueError, match="`mu` must be passed"):
        build_scheduler(get_scheduler("flow_euler"), FLUX).set_timesteps(4)
    for spec in SCHEDULERS:
        if spec.family in ("flow", "any"):
            check_compatible(spec, FLUX, "flux", [1, 2, 4, 50, 200])


def test_flow_display_names_and_family_defaults():
    assert get_scheduler("Flow DPM++ 2M").name == "flow_dpmpp_2m" and get_scheduler("DPM++ 2M").name == "dpmpp_2m"
    assert len(DEFAULTS["flow"]) >= 5 and all(get_scheduler(s).family == "flow" for s in DEFAULTS["flow"])
    assert get_scheduler(REFERENCE["flow"]).family == "flow" and not get_scheduler(REFERENCE["flow"]).stochastic
    assert all(get_scheduler(s).family == "ddpm" for s in (*DEFAULTS["ddpm"], REFERENCE["ddpm"]))


def test_unset_schedulers_resolve_by_the_model_family():
    from evalkit.config import load_config
    from evalkit.models import LoadOptions, load_model
    from evalkit.sweep.plan import resolve_sweep

    ddpm, flow = (load_model(spec, LoadOptions()) for spec in ("builtin:mixture", "builtin:mixture-flow"))
    unset = load_config()
    assert resolve_sweep(unset, ddpm).schedulers == ("euler", "euler_a", "heun", "ddim", "dpmpp_2m",
                                                        "dpmpp_2m_karras", "unipc")
    assert resolve_sweep(unset, ddpm).reference_scheduler == "dpmpp_2m_karras"
    assert resolve_sweep(unset, ddpm).check_scheduler == "unipc_karras"
    assert resolve_sweep(unset, flow).schedulers == DEFAULTS["flow"]
    assert resolve_sweep(unset, flow).reference_scheduler == "flow_unipc"
    assert resolve_sweep(unset, flow).check_scheduler == "flow_dpmpp_2m"  # the family's first check that isn't it
    assert resolve_sweep(load_config(reference_scheduler="flow_dpmpp_2m"), flow).check_scheduler == "flow_unipc"
    assert resolve_sweep(load_config(certify=False), flow).check_scheduler is None
    given = resolve_sweep(load_config(schedulers="flow_heun", reference_scheduler="same"), flow)
    assert given.schedulers == ("flow_heun",) and given.reference_scheduler == "same"
