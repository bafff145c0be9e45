"""The target's own tests: hwmap's conformance suite on the installed ``toy_cpu`` target."""

from hwmap.testing import conformance_test

test_conforms = conformance_test("toy_cpu", model="zoo:digits_cnn", data="zoo:digits")
