# Shared fixtures: each helper module registers its fixtures here with one import line.
import hypothesis

from tests.fixtures_keys import keys  # noqa: F401
from tests.fixtures_registry import *  # noqa
from tests.fixtures_softhsm import softhsm_env, softhsm_token  # noqa: F401
from tests.support.build import build_env, built, built_tiny  # noqa: F401,E402
from tests.support.deploy import deploy_image, deploy_inputs, deploys  # noqa: F401,E402
from tests.support.sealing import sealing_workspace  # noqa: F401,E402

# No per-example deadline anywhere: time is measured in bench/, never asserted by a test,
# and on a shared two-core machine one example can take ten times its usual time.
hypothesis.settings.register_profile("pipeline", deadline=None)
hypothesis.settings.load_profile("pipeline")
