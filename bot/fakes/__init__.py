"""The fake Slack Web API the demo and the tests run against: kept apart from the product code it exercises."""
