"""The ResShift scheduler (``scheduling_resshift``): the Hub folder's ``scheduler/scheduler_resshift.py``."""
