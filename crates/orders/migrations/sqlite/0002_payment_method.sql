-- How each payment was made, as a receipt says it ("Visa ending 4242"),
-- recorded with the attempt: the card token itself is dropped once settled.
ALTER TABLE payments ADD COLUMN method TEXT;
