"""omni.kit.test cases of dexrl.ui; they need Isaac Sim (pytest never collects them: testpaths = tests)."""

from .test_window import *
