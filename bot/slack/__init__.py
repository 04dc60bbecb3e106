"""Outbound Slack: posting, editing and uploading, the Block Kit messages, and Slack's text markup."""
