"""The running worker: the scheduler, its HTTP port (`/healthz`, `/metrics`, Slack's interactivity endpoint)
and what CSMs answer through the nudges' buttons (`feedback`)."""
