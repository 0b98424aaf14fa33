"""Unikernel types: a registry of classes with one interface (`base.UnikernelType`)."""
