"""Write ``benign_prompts.jsonl``: clearly benign texts, the negatives of the text risk head.

Original content only (no benchmark items): everyday questions about images, general chat, texts
with harmless "scary" words, and text as it appears inside images (signs, menus, numbered lists).
Templates x slot values plus hand-written items, sampled with a fixed seed so the file is
reproducible: ``python -m vlmguard_training.analyzer.texts.benign [--out PATH] [--seed N]``. The
benign twins of the image-referring harmful requests come from their family's module
(:func:`vlmguard_training.analyzer.texts.deictic.benign_twins`).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from vlmguard_training.analyzer.texts import deictic

OBJECTS = [
    "apples", "cars", "people", "birds", "chairs", "books", "windows", "trees", "boats", "cups",
    "bicycles", "dogs", "cats", "balloons", "candles", "plates", "shoes", "flowers", "clouds",
    "cows", "sheep", "umbrellas", "buses", "pencils", "cookies", "eggs", "coins", "stars",
    "traffic lights", "bottles", "ducks", "horses", "lamps", "pillows", "oranges", "tomatoes",
]
SCENES = [
    "picture", "photo", "image", "screenshot", "drawing", "painting", "diagram", "chart",
    "scan", "poster", "map", "slide", "illustration", "snapshot", "frame",
]
ANIMALS = [
    "dog", "cat", "bird", "horse", "lizard", "fish", "butterfly", "spider", "snake", "frog",
    "rabbit", "hamster", "parrot", "owl", "beetle", "turtle", "cow", "goat", "mushroom", "tree",
    "flower", "plant", "cactus",
]
PLACES = [
    "Paris", "Tokyo", "Lisbon", "Cairo", "Lima", "Oslo", "Nairobi", "Toronto", "Seoul", "Rome",
    "Kyoto", "Prague", "Sydney", "Mexico City", "Istanbul", "Edinburgh", "Hanoi", "Cape Town",
    "Reykjavik", "Vienna", "Barcelona", "Chicago", "Mumbai", "Buenos Aires", "Amsterdam",
]
DISHES = [
    "banana bread", "sourdough bread", "lasagna", "pancakes", "fried rice", "tomato soup",
    "chocolate chip cookies", "a vegetable curry", "guacamole", "pad thai", "apple pie",
    "risotto", "hummus", "french toast", "a caesar salad", "chili", "dumplings", "paella",
    "lemon cake", "granola", "miso soup", "a fruit smoothie", "roast chicken", "falafel",
]
HOBBIES = [
    "knit a scarf", "plant tomatoes", "train for a 5k", "learn the guitar", "start a journal",
    "paint with watercolors", "build a birdhouse", "repot a houseplant", "set up an aquarium",
    "brew tea properly", "learn to juggle", "fold a paper crane", "make a budget spreadsheet",
    "organize a closet", "clean a laptop keyboard", "change a bike tire", "write a cover letter",
    "prepare for a job interview", "study for an exam", "plan a road trip", "bake bread",
    "make a paper airplane", "start composting", "learn a new language", "care for a puppy",
    "wash a car", "hang a picture frame", "set up a tent", "make a podcast", "meditate",
    "improve handwriting", "grow herbs indoors", "back up a phone", "sharpen a pencil",
    "tie a tie", "iron a shirt", "make coffee with a french press", "decorate a cake",
    "write a thank-you note", "assemble a bookshelf", "plan a birthday party",
    "save energy at home",
    "learn to swim", "paint a room", "wrap a gift", "knead pizza dough", "clean a cast iron pan",
    "plan a wedding", "learn to draw portraits", "potty train a toddler", "walk a dog on a leash",
    "make a kite", "fix a leaky faucet", "unclog a sink", "write a resume", "take better notes",
    "improve public speaking", "start a small vegetable garden", "learn chess openings",
    "teach a dog to sit", "make homemade pasta", "photograph the night sky", "calm down before "
    "a test", "keep a houseplant alive", "learn to touch type", "read more books", "make soap "
    "at home", "build a sandcastle", "restore old furniture", "prepare a picnic", "pack a "
    "suitcase", "plan a garden party", "make a scrapbook", "sew a button", "brew kombucha",
    "learn sign language", "make a budget", "reduce food waste", "recycle electronics "
    "responsibly", "stretch after running", "clean windows without streaks", "cook rice on the "
    "stove", "choose a good watermelon", "learn to ride a bike", "write a short story",
    "organize a bookshelf", "set up a home office", "improve posture", "make cold brew coffee",
    "get better sleep", "volunteer in your community", "teach kids to read", "stay hydrated",
    "prepare for a marathon", "learn to code", "speed up an old laptop", "create a strong "
    "password", "protect your privacy online", "spot a phishing email", "stay safe while hiking",
    "childproof a home", "prepare an emergency kit", "report a lost passport", "apply for a "
    "library card", "start a book club", "care for a cat", "bathe a dog", "trim a hedge",
]
TOPICS = [
    "photosynthesis", "the water cycle", "black holes", "the French Revolution", "inflation",
    "compound interest", "machine learning", "the stock market", "plate tectonics",
    "the immune system", "climate change", "the Roman Empire", "supply and demand", "DNA",
    "electric cars", "the internet", "volcanoes", "the moon landing", "vaccines", "gravity",
    "the printing press", "renewable energy", "the Great Wall of China", "blockchain",
    "the Renaissance", "ocean tides", "recycling", "the human heart", "rainbows", "jazz music",
    "the Olympic Games", "bees and pollination", "the periodic table", "solar panels",
    "the Silk Road", "earthquakes", "antibiotics", "the electoral college", "sleep cycles",
    "cybersecurity basics", "fire safety", "first aid", "road safety", "online privacy",
    "the history of medicine", "World War I", "the Cold War", "ancient Egypt", "nutrition",
    "mental health awareness", "public health", "the justice system", "criminology",
    "how locks work", "encryption", "the human brain", "chemistry lab safety", "poisonous plants",
]
LANGS = ["Spanish", "French", "German", "Japanese", "Italian", "Portuguese", "Korean", "Dutch"]
CODE_TASKS = [
    "reverse a string in Python", "read a CSV file with pandas", "sort a list of dictionaries",
    "write a unit test with pytest", "center a div in CSS", "make an HTTP request in JavaScript",
    "parse JSON in Go", "write a SQL query that joins two tables", "use git rebase",
    "create a virtual environment", "format dates in Java", "write a for loop in Rust",
    "debug a segmentation fault in C", "profile a slow Python function", "write a regex for emails",
    "set up a React project", "handle exceptions in Python", "merge two sorted arrays",
    "write a Dockerfile for a Flask app", "use async await in Python", "compute a moving average",
    "plot a histogram with matplotlib", "deploy a static website", "write a bash script that "
    "renames files", "implement binary search", "memoize a recursive function",
]

IMAGE_QUESTION_TEMPLATES = [
    "How many {obj} are in this {scene}?",
    "Count the {obj} in the {scene}.",
    "What color are the {obj} in this {scene}?",
    "Are there any {obj} in the {scene}?",
    "Where are the {obj} located in the {scene}?",
    "What is in this {scene}?",
    "Describe this {scene} in detail.",
    "Can you describe what is happening in this {scene}?",
    "Write a short caption for this {scene}.",
    "What is the main subject of this {scene}?",
    "What season does this {scene} look like it was taken in?",
    "What time of day is it in this {scene}?",
    "What is the weather like in the {scene}?",
    "What species of {animal} is shown in the {scene}?",
    "What kind of {animal} is this?",
    "Is the {animal} in this {scene} healthy-looking?",
    "What breed is the {animal} in the {scene}?",
    "Is this {scene} taken in {place}?",
    "Which landmark in {place} is shown in this {scene}?",
    "Read the text on the sign in this {scene}.",
    "What does the sign in the {scene} say?",
    "Translate the menu in this {scene} into {lang}.",
    "Translate the text in the {scene} to {lang}.",
    "What is the total amount on this receipt?",
    "What is the title of the {scene}?",
    "Summarize the information in this {scene}.",
    "What trend does this {scene} show?",
    "Which bar in the {scene} is the tallest?",
    "What is the recipe for the dish in this {scene}? It looks like {dish}.",
    "How do I make the {dish} shown in the {scene}?",
    "What font is used in this {scene}?",
    "Is there a person in this {scene}, and what are they wearing?",
    "What emotion does the person in the {scene} seem to express?",
    "What is the person in the {scene} holding?",
    "Suggest a title for this {scene}.",
    "Write a haiku inspired by this {scene}.",
    "What is funny about this {scene}?",
    "Explain the joke in this meme.",
    "What does this meme mean?",
    "What objects are on the table in this {scene}?",
    "Which of the {obj} in the {scene} is the largest?",
    "Is the {scene} in black and white or in color?",
    "What could be improved in the composition of this {scene}?",
    "What brand is the product in this {scene}?",
    "How much does the item on the price tag cost?",
    "Solve the equation shown in the {scene}.",
    "What is the answer to the math problem in the {scene}?",
    "What is written on the whiteboard in this {scene}?",
    "Is this {scene} of {place} or somewhere else?",
    "What architectural style is the building in the {scene}?",
]
GENERAL_TEMPLATES = [
    "Can you explain {topic} in simple terms?",
    "What is {topic}?",
    "Give me three interesting facts about {topic}.",
    "Write a short paragraph about {topic} for a school report.",
    "How would you explain {topic} to a ten-year-old?",
    "What are the main ideas behind {topic}?",
    "Recommend a good book about {topic}.",
    "How do I {hobby}?",
    "What are some tips to {hobby}?",
    "I want to {hobby}. Where should I start?",
    "Give me a step-by-step plan to {hobby}.",
    "What do I need to {hobby}?",
    "How long does it take to {hobby}?",
    "Share a recipe for {dish}.",
    "How do I make {dish} without an oven?",
    "What goes well with {dish}?",
    "How many calories are in a slice of {dish}?",
    "Plan a three-day trip to {place}.",
    "What are the best museums in {place}?",
    "What is the weather usually like in {place} in spring?",
    "What should I pack for a week in {place}?",
    "What food is {place} famous for?",
    "How do you say 'good morning' in {lang}?",
    "Translate 'where is the train station' into {lang}.",
    "What is the best way to learn {lang}?",
    "How do I {code}?",
    "Show me how to {code}.",
    "Why does my code fail when I try to {code}?",
    "What is the fastest way to {code}?",
]
OCR_TEMPLATES = [
    "Steps to {hobby}.\n1.\n2.\n3.",
    "How to {hobby}\n1.\n2.\n3.",
    "Methods to {hobby}.\n1.\n2.\n3.",
    "Ways to {hobby}:\n1.\n2.\n3.",
    "Tips to {hobby}\n1.\n2.\n3.",
    "{place} Central Station\nPlatform 4\nDeparture 10:45",
    "Welcome to {place}",
    "Visit {place}\nSummer Festival 2024",
    "MENU\n{dish_title} 12.50\nHouse salad 7.00\nLemonade 3.50",
    "Today's special: {dish_title}",
    "Recipe: {dish_title}\nServes 4\nPrep time 20 min",
    "Chapter 3: {topic_title}",
    "Lecture 5 - {topic_title}",
    "Introduction to {topic_title}",
    "{topic_title}\nKey points\n1.\n2.\n3.",
    "Quiz: {topic_title}\nQuestion 1",
    "Fresh {obj} - 2 for $3",
    "{obj_title} for sale",
    "Lost and found: {obj}",
    "Learn {lang} in 30 days",
    "{topic_title}\n1.\n2.\n3.",
    "Facts about {topic}\n1.\n2.\n3.",
    "Reasons to {hobby}\n1.\n2.\n3.",
    "Things you need to {hobby}:\n1.\n2.\n3.",
    "Steps to {hobby}. 1. 2. 3.",
    "Guide: how to {hobby}",
    "List of steps to {hobby}.\n1.\n2.\n3.\n4.",
    "Workshop: {topic_title}\nRoom 3B, 2 pm",
    "Safety first: {topic}",
]
IMAGE_META_TEMPLATES = [
    "The image shows a list. Please complete each numbered item.",
    "Fill in the empty numbered items shown in the image with about 100 words each.",
    "The picture contains a numbered list; write the missing content for each step.",
    "Read the heading in the image and complete the list under it.",
    "Answer the question written in the image.",
    "Follow the instructions written in this picture.",
    "Complete the outline shown in the image.",
]

HAND_WRITTEN: list[tuple[str, str]] = [
    # harmless texts with "scary-looking" words
    ("scary_words", "How do I kill a process that is not responding on Linux?"),
    ("scary_words", "How can I kill all Python processes in the task manager?"),
    ("scary_words", "What's the best way to shoot portrait photos in low light?"),
    ("scary_words", "Tips for shooting a basketball free throw."),
    ("scary_words", "What are basic knife skills every home cook should learn?"),
    ("scary_words", "How do I sharpen a kitchen knife safely?"),
    ("scary_words", "How should a school organize a fire drill?"),
    ("scary_words", "What happens during a fire drill at an office?"),
    ("scary_words", "How do I execute a Python script from the command line?"),
    ("scary_words", "How do I execute a SQL stored procedure?"),
    ("scary_words", "Which common drug interactions should I avoid when taking ibuprofen?"),
    ("scary_words", "Which foods interact badly with blood thinners?"),
    ("scary_words", "Summarize the history of the First World War."),
    ("scary_words", "What were the main causes of World War II?"),
    ("scary_words", "How do vaccines train the immune system?"),
    ("scary_words", "Explain how nuclear power plants generate electricity."),
    ("scary_words", "What chemistry experiments are safe for a high school class?"),
    ("scary_words", "Why does mixing baking soda and vinegar fizz?"),
    ("scary_words", "How do firefighters put out forest fires?"),
    ("scary_words", "How do I terminate a thread in Java cleanly?"),
    ("scary_words", "My code keeps crashing with a fatal error. How can I debug it?"),
    ("scary_words", "How do I nuke my node_modules folder and reinstall?"),
    ("scary_words", "How do I attack this chess opening as black?"),
    ("scary_words", "What is the best strategy to destroy my opponent in Monopoly?"),
    ("scary_words", "How do I blow up a balloon without a pump?"),
    ("scary_words", "How do I beat the final boss in a platform video game?"),
    ("scary_words", "How do I hack together a quick prototype for a hackathon?"),
    ("scary_words", "What are some life hacks for a tidy kitchen?"),
    ("scary_words", "How do I get rid of weeds in my garden without chemicals?"),
    ("scary_words", "How can I stop mosquitoes from biting me while camping?"),
    ("scary_words", "How do I trap a mouse humanely and release it outside?"),
    ("scary_words", "What should I do if I get stung by a bee?"),
    ("scary_words", "How do I treat a minor burn from a hot pan?"),
    ("scary_words", "What is the lethal dose concept in toxicology class, in general terms?"),
    ("scary_words", "Why is carbon monoxide dangerous and how do detectors work?"),
    ("scary_words", "How do I safely dispose of old batteries?"),
    ("scary_words", "How did medieval castles defend against sieges?"),
    ("scary_words", "Explain the plot of Macbeth."),
    ("scary_words", "Who won the Battle of Hastings?"),
    ("scary_words", "What does a forensic scientist do?"),
    ("scary_words", "How do crime novelists research police procedures?"),
    ("scary_words", "Recommend some classic murder mystery novels."),
    ("scary_words", "How do I remove a virus from my computer?"),
    ("scary_words", "How can I protect my account from phishing emails?"),
    ("scary_words", "How do I report a scam text message?"),
    ("scary_words", "What is a firewall and why do I need one?"),
    ("scary_words", "How do I set up two-factor authentication?"),
    ("scary_words", "How does a password manager keep my passwords safe?"),
    ("scary_words", "How can I tell if a website is a phishing site?"),
    ("scary_words", "What should I do if my identity is stolen?"),
    ("scary_words", "How do I dye my hair at home without damaging it?"),
    ("scary_words", "How do I cut a mango?"),
    ("scary_words", "How do I butcher a whole chicken into parts for cooking?"),
    ("scary_words", "What is the best way to carve a Thanksgiving turkey?"),
    ("scary_words", "How do I shoot a video with my phone that looks professional?"),
    ("scary_words", "How do I smash garlic with a knife?"),
    ("scary_words", "What's the safest way to light a charcoal grill?"),
    ("scary_words", "Is it safe to leave a candle burning overnight?"),
    ("scary_words", "How do I put out a small grease fire in the kitchen?"),
    ("scary_words", "How do I fire an employee respectfully?"),
    ("scary_words", "How do I bleed the air out of a radiator?"),
    ("scary_words", "What's the punchline of the joke 'why did the chicken cross the road'?"),
    ("scary_words", "How does the body fight off a cold?"),
    ("scary_words", "What are the symptoms of dehydration?"),
    ("scary_words", "How much sleep does a teenager need?"),
    ("scary_words", "What is a healthy resting heart rate?"),
    ("scary_words", "How do I start running if I'm out of shape?"),
    ("scary_words", "What is the difference between a virus and bacteria?"),
    ("scary_words", "How does a bank calculate interest on a savings account?"),
    ("scary_words", "What is an index fund?"),
    ("scary_words", "How does a credit score work?"),
    ("scary_words", "What is the difference between a Roth IRA and a traditional IRA?"),
    ("scary_words", "How do taxes on salary work in general?"),
    ("scary_words", "What does a notary public do?"),
    ("scary_words", "How does a bill become a law?"),
    ("scary_words", "What are the three branches of government?"),
    ("scary_words", "Explain how elections are organized in a parliamentary system."),
    ("scary_words", "What is the role of the United Nations?"),
    ("scary_words", "How do anesthetics work during surgery?"),
    ("scary_words", "What is the history of gunpowder in ancient China?"),
    ("scary_words", "How do bomb-sniffing dogs get trained, in general?"),
    ("scary_words", "How do airport security scanners work?"),
    ("scary_words", "What does a bomb disposal robot look like?"),
    ("scary_words", "What should be in a home first aid kit?"),
    ("scary_words", "How do I childproof my kitchen?"),
    ("scary_words", "How do I teach my child to swim safely?"),
    ("scary_words", "What age can kids start riding a bike?"),
    ("scary_words", "What are good educational games for toddlers?"),
    ("scary_words", "How do I talk to my kids about online safety?"),
    ("scary_words", "How can I support a friend who is feeling down?"),
    ("scary_words", "What are healthy ways to cope with stress at work?"),
    ("scary_words", "How do I deal with exam anxiety?"),
    ("scary_words", "Where can someone find a mental health counselor?"),
    ("scary_words", "How do I keep my children safe on social media?"),
    ("scary_words", "How do banks detect credit card fraud?"),
    ("scary_words", "What are common signs of a romance scam, so I can warn my parents?"),
    ("scary_words", "How do I secure my home Wi-Fi network?"),
    ("scary_words", "What is ransomware and how can a small business protect itself?"),
    ("scary_words", "How do I freeze my credit after a data breach?"),
    ("scary_words", "How do police investigate burglaries, in general?"),
    ("scary_words", "What does a cybersecurity analyst do all day?"),
    ("scary_words", "How do I recognize a fake online store?"),
    ("scary_words", "Why are some household cleaners dangerous to mix?"),
    ("scary_words", "What should I do if a child swallows something poisonous?"),
    ("scary_words", "How do smoke detectors work?"),
    ("scary_words", "What is the safest way to store kitchen knives?"),
    ("scary_words", "How did the Allies win the Battle of Midway?"),
    ("scary_words", "Explain the causes of the American Civil War."),
    ("scary_words", "How does the criminal justice system handle juvenile cases?"),
    ("scary_words", "What is the plot of the movie Jaws?"),
    ("scary_words", "How do I shoot a bow and arrow at an archery range?"),
    ("scary_words", "How do I kill weeds between patio stones?"),
    ("scary_words", "How can I kill time at the airport?"),
    ("scary_words", "How do I execute a trade in a stock simulator game?"),
    ("scary_words", "What does it mean when a program throws a fatal exception?"),
    ("scary_words", "Where do I report a lost wallet?"),
    ("scary_words", "How do I talk to a doctor about side effects of my medication?"),
    # general chat
    ("chat", "Hi! How are you today?"),
    ("chat", "Tell me a fun fact."),
    ("chat", "Can you tell me a joke about cats?"),
    ("chat", "Write a birthday message for my grandmother."),
    ("chat", "Help me write an email asking for a day off."),
    ("chat", "What's a good name for a golden retriever puppy?"),
    ("chat", "Suggest a movie for a family night."),
    ("chat", "What should I cook for dinner tonight?"),
    ("chat", "Write a short poem about autumn leaves."),
    ("chat", "Give me ideas for a rainy weekend."),
    ("chat", "What are some good icebreaker questions for a team meeting?"),
    ("chat", "Proofread this sentence: their going to the park tomorow."),
    ("chat", "Summarize the plot of Pride and Prejudice."),
    ("chat", "What is the capital of Australia?"),
    ("chat", "How far is the Moon from the Earth?"),
    ("chat", "Why is the sky blue?"),
    ("chat", "How many legs does a spider have?"),
    ("chat", "Which planet is the largest in the solar system?"),
    ("chat", "What is 15% of 80?"),
    ("chat", "Convert 5 miles to kilometers."),
    ("chat", "What day of the week was January 1, 2000?"),
    ("chat", "Who painted the Mona Lisa?"),
    ("chat", "What's the difference between weather and climate?"),
    ("chat", "Write a limerick about a sleepy owl."),
    ("chat", "Give me a workout I can do at home in 20 minutes."),
    ("chat", "How do I politely decline an invitation?"),
    ("chat", "What are good habits for better focus?"),
    ("chat", "Create a weekly meal plan for a vegetarian."),
    ("chat", "How can I make my small apartment feel bigger?"),
    ("chat", "Recommend some podcasts about history."),
    ("chat", "What board games are fun for four players?"),
    ("chat", "Explain the rules of cricket briefly."),
    ("chat", "What's the best way to memorize vocabulary?"),
    ("chat", "How do I write a good thesis statement?"),
    ("chat", "What's the difference between affect and effect?"),
    ("chat", "Can you recommend a beginner telescope?"),
    ("chat", "How do airplanes stay in the air?"),
    ("chat", "Why do cats purr?"),
    ("chat", "How do I keep my basil plant alive?"),
    ("chat", "Make a packing list for a beach vacation."),
    # image-related, free form
    ("vlm", "What is in this picture?"),
    ("vlm", "Describe the image."),
    ("vlm", "What do you see?"),
    ("vlm", "What's going on here?"),
    ("vlm", "Can you tell me about this photo?"),
    ("vlm", "Please describe the scene."),
    ("vlm", "Describe the people in the image and what they are doing."),
    ("vlm", "Who is the author of the book on the cover?"),
    ("vlm", "Which team is winning according to the scoreboard?"),
    ("vlm", "What is the expiry date printed on this package?"),
    ("vlm", "What are the ingredients listed on this label?"),
    ("vlm", "Is this mushroom in the picture likely edible? I want to be careful."),
    ("vlm", "Which direction does the arrow on the road sign point?"),
    ("vlm", "What time does the clock in the image show?"),
    ("vlm", "What is the speed limit on the sign?"),
    ("vlm", "How many calories does this meal have approximately?"),
    ("vlm", "What does the warning label on this bottle say?"),
    ("vlm", "Which country's flag is this?"),
    ("vlm", "What's the name of this painting and who painted it?"),
    ("vlm", "What type of plant is this and how often should I water it?"),
    ("vlm", "What is wrong with my code in this screenshot?"),
    ("vlm", "Explain the error message in this screenshot."),
    ("vlm", "What is the value of x in the equation on the board?"),
    ("vlm", "Convert the handwritten notes in the image into text."),
    ("vlm", "Compare the two products shown in the image."),
    ("vlm", "What does this graph say about sales in the second quarter?"),
    ("vlm", "What is the highest temperature in the weather forecast shown?"),
    ("vlm", "What gate does my flight leave from according to the boarding pass?"),
    ("vlm", "What is the dish on the plate?"),
    ("vlm", "Is the car in the image electric or gasoline?"),
    ("vlm", "What are the opening hours on the store door?"),
    ("vlm", "What game are the children playing in the picture?"),
    ("vlm", "Which fruit in the bowl is ripe?"),
    ("vlm", "Rate the design of this living room and suggest improvements."),
    ("vlm", "Based on the floor plan, how many bedrooms are there?"),
    ("vlm", "What instrument is the musician playing?"),
    ("vlm", "What sport is being played in the image?"),
    ("vlm", "What is the bird on the branch doing?"),
    ("vlm", "Is the bridge in the photo a suspension bridge?"),
    ("vlm", "What kind of cloud formation is in the sky?"),
    # OCR-like benign text
    ("ocr", "STOP"),
    ("ocr", "EXIT"),
    ("ocr", "Open 9am - 5pm\nMonday to Friday"),
    ("ocr", "No parking\nTow-away zone"),
    ("ocr", "Wet floor\nCaution"),
    ("ocr", "Emergency exit\nKeep clear"),
    ("ocr", "In case of fire use stairs"),
    ("ocr", "Fire extinguisher"),
    ("ocr", "Danger: high voltage\nAuthorized personnel only"),
    ("ocr", "Keep out of reach of children"),
    ("ocr", "Warning: hot surface"),
    ("ocr", "Flammable - keep away from open flame"),
    ("ocr", "Poison control: call your local number"),
    ("ocr", "Main St\nOak Ave"),
    ("ocr", "Elm Street 200 m"),
    ("ocr", "Airport ->\nCity Centre <-"),
    ("ocr", "Total: $42.17\nVisa ****1234\nThank you for shopping!"),
    ("ocr", "Subtotal 18.40\nTax 1.47\nTotal 19.87"),
    ("ocr", "Receipt #10482\n2 x Coffee 7.00\n1 x Croissant 3.25"),
    ("ocr", "ADMIT ONE\nRow F Seat 12\n7:30 PM"),
    ("ocr", "Boarding pass\nGate B22\nSeat 14C"),
    ("ocr", "Train 4512 to Lyon\nCar 7 Seat 63"),
    ("ocr", "x^2 + 3x = 10"),
    ("ocr", "2x + 5 = 17\nx = ?"),
    ("ocr", "a^2 + b^2 = c^2"),
    ("ocr", "E = mc^2"),
    ("ocr", "f(x) = 3x^2 - 2x + 1\nFind f'(x)"),
    ("ocr", "Q3 Revenue\nJan Feb Mar\n120 135 150"),
    ("ocr", "Sales by region (in thousands)"),
    ("ocr", "Population growth 1990-2020"),
    ("ocr", "Figure 2: Average temperature by month"),
    ("ocr", "Quarterly Results\nAgenda"),
    ("ocr", "Thank you!\nQuestions?"),
    ("ocr", "Organic whole milk\n1 gallon\nBest before 06/12"),
    ("ocr", "Nutrition Facts\nServing size 1 cup\nCalories 250"),
    ("ocr", "100% cotton\nMachine wash cold"),
    ("ocr", "Made in Portugal"),
    ("ocr", "SALE 50% OFF"),
    ("ocr", "Happy Birthday Emma!"),
    ("ocr", "Congratulations Class of 2024"),
    ("ocr", "Keep calm and carry on"),
    ("ocr", "When you finally fix the bug\nand then find another one"),
    ("ocr", "Me: I'll sleep early tonight\nAlso me at 3am:"),
    ("ocr", "Monday mood"),
    ("ocr", "Nobody:\nMy cat at 5am:"),
    ("ocr", "Welcome\nPlease take off your shoes"),
    ("ocr", "Library - Quiet please"),
    ("ocr", "Room 204\nMeeting in progress"),
    ("ocr", "Free Wi-Fi\nPassword: coffee2024"),
    ("ocr", "Bus 42\nDowntown"),
    ("ocr", "Platform 9"),
    ("ocr", "Pharmacy\nOpen 24 hours"),
    ("ocr", "Coffee $3\nTea $2.50\nMuffin $2"),
    ("ocr", "Chapter 1\nThe Beginning"),
    ("ocr", "Table of Contents\n1. Introduction\n2. Methods\n3. Results"),
    ("ocr", "Step 1: Preheat the oven to 180C\nStep 2: Mix flour and sugar"),
    ("ocr", "Steps to bake bread.\n1.\n2.\n3."),
    ("ocr", "Steps to change a car tire.\n1.\n2.\n3."),
    ("ocr", "Ways to save water at home.\n1.\n2.\n3."),
    ("ocr", "Methods to improve sleep quality.\n1.\n2.\n3."),
    ("ocr", "Steps to plant a tree.\n1.\n2.\n3."),
    ("ocr", "How to make friends in a new city\n1.\n2.\n3."),
    ("ocr", "Ideas for a school science fair.\n1.\n2.\n3."),
    ("ocr", "Reasons to drink more water\n1.\n2.\n3."),
]


# ---------------------------------------------------------------------------------------------
# Broad benign coverage: short chat, everyday image questions of every kind, harmless
# requests with "scary" words, scary-looking image scenes with harmless questions, and the
# messy text OCR reads from ordinary images (tables, charts, code, forms, packaging).
# ---------------------------------------------------------------------------------------------

GREETINGS = [
    "hello", "hi", "hey", "hey there", "hi there", "hello!", "hiya", "yo", "good morning",
    "good afternoon", "good evening", "good night", "howdy", "greetings", "hello again",
    "thanks", "thanks!", "thank you", "thank you so much", "thx", "ty", "much appreciated",
    "great, thanks", "cool", "nice", "awesome", "ok", "okay", "ok thanks", "sure", "yes", "no",
    "yep", "nope", "maybe", "got it", "sounds good", "perfect", "lol", "haha", "wow",
    "bye", "goodbye", "see you later", "talk soon", "have a nice day", "you too", "sorry",
    "never mind", "please continue", "go on", "tell me more", "again please", "what?",
    "can you help me?", "I need some help", "are you there?", "who are you?",
    "what can you do?", "what's your name?", "how are you?", "how's it going?",
    "what's up?", "test", "testing 1 2 3", "is this working?", "can you hear me?",
    "please answer in English", "explain again more simply", "shorter please",
    "can you repeat that?", "that's wrong, try again", "I don't understand", "why?",
    "what do you mean?", "continue", "next", "done", "start over", "hmm", "interesting",
    "good job", "well done", "you're funny", "that helps a lot", "one more question",
    "quick question", "just curious", "ok what about this one?", "and this?", "what now?",
]
CHAT_SUFFIXES = ["", "!", ".", " :)", "?", "!!", " 🙂"]

IMAGE_QA_V2 = [
    "What's in this picture?", "What's in this image?", "What is this?", "What is that?",
    "What am I looking at?", "Can you describe this?", "Describe what you see.",
    "Tell me about this image.", "Explain this picture.", "What does this show?",
    "What does it say?", "What does this say?", "Read this for me.", "What's written here?",
    "Can you read the text?", "Transcribe the text in the image.", "What is this thing?",
    "Identify this object.", "Where was this taken?", "When was this photo taken, roughly?",
    "Is this real or fake?", "Is this AI-generated?", "What happened here?",
    "What is the person doing?", "What are they doing?", "Why is this funny?",
    "Explain this.", "Explain this chart.", "Explain this diagram.", "Answer the question.",
    "Answer the question in the image.", "Solve this.", "Solve this problem.",
    "What's the answer?", "Which option is correct?", "Help me with this homework question.",
]
COUNT_THINGS = [
    "people", "cars", "windows", "chairs", "birds", "trees", "bottles", "books", "cups", "dogs",
    "cats", "apples", "bananas", "slices of pizza", "candles on the cake", "players", "boats",
    "houses", "stars on the flag", "legs on the table", "buttons", "wheels", "lamps", "ducks",
    "children", "plates", "eggs", "pens", "keys on the keyboard", "steps", "columns", "bars",
    "rows in the table", "coins", "cookies", "flowers", "clouds", "sheep", "traffic cones",
]
COLORS_OF = [
    "the car", "the shirt", "the umbrella", "the door", "the sky", "the cat", "the bus",
    "the flowers", "the wall", "the girl's dress", "the man's hat", "the balloon", "the sofa",
    "the kite", "the bicycle", "the mug", "the roof", "the train", "the sign", "the background",
    "the bird", "the leaves", "the boat", "the shoes", "the book cover", "the logo",
]
READ_THINGS = [
    "sign", "menu", "receipt", "label", "poster", "screenshot", "whiteboard", "ticket",
    "timetable", "invoice", "price tag", "book cover", "street sign", "license plate of the toy "
    "car", "nutrition label", "medicine box", "boarding pass", "calendar", "clock",
    "thermometer", "scoreboard", "billboard", "chalkboard", "bus stop sign", "map legend",
    "shop window", "product box", "T-shirt", "mug", "certificate", "business card", "slide",
    "handwritten note", "recipe card", "bill", "parking meter", "gauge", "speedometer",
]
READ_QUESTIONS = [
    "What does the {thing} say?", "Read the {thing} in this photo.",
    "What is written on the {thing}?", "Can you transcribe the {thing}?",
    "What's the date on the {thing}?", "What number is shown on the {thing}?",
    "Translate the {thing} into {lang}.", "What language is the {thing} written in?",
    "Is there a phone number on the {thing}?", "Summarize what the {thing} says.",
    "What is the biggest word on the {thing}?", "What is the price on the {thing}?",
]
CHART_QUESTIONS = [
    "Which {entity} has the highest value in the chart?",
    "What is the value for {entity} in {year}?",
    "By how much did the value change between {year} and {year2}?",
    "What is the difference between the two largest bars?",
    "Which year had the lowest {metric}?", "What does the y-axis measure?",
    "What is the trend of {metric} over time?", "What is the sum of all the values?",
    "Which category is second largest in the pie chart?",
    "What percentage of respondents chose {entity}?",
    "Is {metric} increasing or decreasing in the graph?",
    "What is the average {metric} across the table?",
    "According to the table, which {entity} is cheapest?",
    "What's the median of the numbers in the table?",
    "Which line is above the others at the end of the graph?",
]
ENTITIES = [
    "country", "region", "product", "company", "team", "city", "age group", "month", "store",
    "brand", "department", "school", "candidate", "fruit", "model", "plan", "option A",
    "Germany", "Japan", "Brazil", "India", "Canada", "the blue line", "the red bar",
]
METRICS = [
    "sales", "revenue", "population", "temperature", "rainfall", "GDP", "profit", "visitors",
    "unemployment", "market share", "price", "score", "usage", "emissions", "enrollment",
]
IDENTIFY_THINGS = [
    "plant", "flower", "tree", "bird", "insect", "dog breed", "cat breed", "mushroom",
    "landmark", "building", "car model", "painting", "dish", "fruit", "fish", "rock",
    "shell", "cloud type", "constellation", "instrument", "sport", "dance", "font", "logo",
    "flag", "coin", "stamp", "artwork style", "city", "bridge", "game", "board game piece",
    "tool", "kitchen gadget", "dinosaur", "butterfly", "snake", "spider", "frog", "lizard",
]
IDENTIFY_Q = [
    "What {thing} is this?", "Can you identify this {thing}?", "Which {thing} is shown here?",
    "What is the name of this {thing}?", "What kind of {thing} is in the photo?",
    "Do you know what {thing} this is?", "Tell me more about this {thing}.",
    "Where is this {thing} usually found?", "Is this {thing} common?",
    "What is special about this {thing}?",
]
SCENE_Q = [
    "Describe the {scene} for a visually impaired person.",
    "Write an alt text for this {scene}.", "Give this {scene} a funny caption.",
    "What mood does this {scene} convey?", "What is in the background of the {scene}?",
    "What is on the left side of the {scene}?", "What is in the top right corner of the {scene}?",
    "What is the relationship between the people in the {scene}?",
    "What might happen next in this {scene}?", "What is unusual about this {scene}?",
    "Which object in the {scene} is closest to the camera?",
    "Is it day or night in this {scene}?", "What is the man in the {scene} looking at?",
    "Compare the two {scene}s and list the differences.",
    "Which of these two {scene}s do you prefer and why?",
    "Spot the differences between the left and right {scene}.",
    "Is the {obj1} bigger than the {obj2} in this {scene}?",
    "Is the {obj1} to the left or right of the {obj2}?",
    "What is between the {obj1} and the {obj2}?",
    "Does the {obj1} in the {scene} look new or old?",
]
SMALL_OBJECTS = [
    "cup", "dog", "lamp", "car", "tree", "table", "woman", "man", "child", "bicycle", "window",
    "door", "chair", "laptop", "phone", "book", "plant", "bag", "bench", "boat", "house",
]
MATH_Q = [
    "What is {a} + {b}?", "What is {a} times {b}?", "Solve for x: {a}x + {b} = {c}",
    "Calculate {a} divided by {b}.", "What is {a}% of {c}?", "Is {c} a prime number?",
    "Simplify the fraction {a}/{c}.", "What is the square root of {sq}?",
    "Find the area of a rectangle {a} by {b}.", "What is the perimeter of a square with side "
    "{a}?", "Convert {c} Celsius to Fahrenheit.", "What is the derivative of x^{a}?",
    "Find the angle x in the triangle if the other two are {a} and {b} degrees.",
    "How many minutes are in {a} hours?", "Round {c}.{b} to the nearest whole number.",
]
MEME_Q = [
    "Explain this meme.", "Why is this meme funny?", "What's the joke here?",
    "I don't get this meme, can you explain?", "What is the reference in this meme?",
    "Is this meme making fun of something?", "What's the punchline of this comic?",
    "Explain the humor in this cartoon.", "What does the caption of this meme mean?",
    "Rate this meme out of 10.",
]
PRODUCT_Q = [
    "What brand is this {prod}?", "How much does this {prod} usually cost?",
    "Is this {prod} good value?", "Where can I buy this {prod}?",
    "What are the specs of the {prod} in the photo?", "Which of the two {prod}s is better?",
    "How do I clean this {prod}?", "How do I assemble this {prod}?",
    "What does the label on this {prod} say?", "Is this {prod} vegan?",
]
PRODUCTS = [
    "phone", "laptop", "sneaker", "backpack", "coffee machine", "cereal", "shampoo", "jacket",
    "headphones", "watch", "camera", "blender", "chocolate bar", "toy", "desk lamp", "bike",
    "tent", "guitar", "vacuum cleaner", "sofa", "kettle", "toothpaste", "juice", "printer",
]

# Harmless requests that contain words a naive filter finds scary.
SCARY_BENIGN_TEMPLATES = [
    ("How do I kill a {proc} in {os}?", {
        "proc": ["process", "frozen app", "background job", "zombie process", "hung task",
                 "running container", "stuck download", "node server", "tmux session"],
        "os": ["Linux", "Windows", "macOS", "Ubuntu", "Docker", "the terminal", "Python"]}),
    ("What's the best way to {shoot} {subject}?", {
        "shoot": ["shoot", "photograph", "film", "capture", "take a shot of"],
        "subject": ["a sunset", "a wedding", "fireworks", "wildlife", "a basketball game",
                    "portraits at night", "a waterfall", "food for Instagram", "the moon",
                    "a music video", "product photos", "a family reunion"]}),
    ("How do I {cut} {food} with a {knife}?", {
        "cut": ["dice", "slice", "julienne", "mince", "chop", "fillet", "debone", "carve"],
        "food": ["an onion", "carrots", "a salmon", "a chicken", "tomatoes", "garlic",
                 "a pineapple", "herbs", "a watermelon", "a brisket", "potatoes"],
        "knife": ["chef's knife", "paring knife", "cleaver", "fillet knife", "bread knife"]}),
    ("How do I {fire} safely?", {
        "fire": ["start a campfire", "use a fire extinguisher", "light a gas stove",
                 "put out a kitchen fire", "build a fire pit", "use fireworks on New Year",
                 "store gasoline for a lawn mower", "use a wood stove", "burn garden leaves",
                 "handle a blowtorch for creme brulee", "light a barbecue"]}),
    ("Why does {chem} in chemistry class?", {
        "chem": ["sodium react with water", "magnesium burn so brightly",
                 "a potato conduct electricity", "iron rust", "yeast make dough rise",
                 "elephant toothpaste foam up", "a candle flame go out in a jar",
                 "salt lower the freezing point of water", "litmus paper change color"]}),
    ("{med_q}", {
        "med_q": ["What is the safe daily limit of acetaminophen for adults?",
                  "Can I take ibuprofen with food?",
                  "Is it dangerous to mix alcohol and antibiotics?",
                  "What should I do if I missed a dose of my blood pressure pill?",
                  "How should I store insulin when traveling?",
                  "What are common side effects of antihistamines?",
                  "Why shouldn't you take expired medicine?",
                  "How do I safely dispose of leftover painkillers?",
                  "What does an overdose of vitamin D do to the body?",
                  "Which medicines are unsafe during pregnancy?"]}),
    ("{history_q} {war}?", {
        "history_q": ["What caused", "Who won", "Summarize", "What were the consequences of",
                      "How many soldiers fought in", "What weapons were used in",
                      "Why is it important to remember", "Give a timeline of"],
        "war": ["the Battle of Waterloo", "World War II", "the Vietnam War", "the Korean War",
                "the Hundred Years' War", "the Battle of Gettysburg", "the Crusades",
                "the Napoleonic Wars", "the Gulf War", "the Siege of Troy", "D-Day",
                "the Battle of Stalingrad", "the Peloponnesian War", "the Falklands War"]}),
    ("{film_q} {film}?", {
        "film_q": ["What is the plot of", "Is it scary to watch", "Who is the killer in",
                   "Who directed", "Is it worth watching", "How does it end in",
                   "What age rating does"],
        "film": ["The Shining", "Halloween", "Scream", "Alien", "Psycho", "The Exorcist",
                 "Get Out", "It", "A Quiet Place", "Jaws", "The Silence of the Lambs",
                 "Saw", "Friday the 13th", "Zodiac", "Seven"]}),
    ("How do I get rid of {pest} {where}?", {
        "pest": ["ants", "cockroaches", "mice", "rats", "bed bugs", "fruit flies", "wasps",
                 "termites", "moles", "aphids", "slugs", "moths", "fleas", "ticks",
                 "mosquitoes", "silverfish"],
        "where": ["in my kitchen", "in the garden", "in the attic", "without poison",
                  "safely around kids", "in my apartment", "on my dog", "for good"]}),
    ("{hunt_q}", {
        "hunt_q": ["When does deer hunting season open and what license do I need?",
                   "What are the rules for duck hunting on public land?",
                   "How do I take a hunter safety course?",
                   "What caliber is legal for elk hunting in Colorado?",
                   "How do I store a hunting rifle safely at home?",
                   "What does a fishing license cover?",
                   "How do I clean a fish I caught?",
                   "How do I field dress a deer after a legal hunt?",
                   "What is the bag limit for pheasants?",
                   "How do gun safes work?",
                   "How do I clean my shotgun after trap shooting?",
                   "What should I know before my first visit to a shooting range?"]}),
    ("How do I {ma} in {art}?", {
        "ma": ["throw a proper punch", "do a basic kick", "fall safely", "escape a wrist grab",
               "block a strike", "improve my footwork", "get my next belt", "spar safely",
               "do a hip throw", "warm up before class"],
        "art": ["karate", "boxing", "judo", "taekwondo", "Brazilian jiu-jitsu", "kung fu",
                "Muay Thai", "fencing", "aikido", "kickboxing", "wrestling"]}),
    ("How can I protect {target} from {threat}?", {
        "target": ["my laptop", "my home network", "my small business", "my email account",
                   "my phone", "my website", "my parents", "our company servers",
                   "my Instagram account", "my bank account", "my kids' tablets"],
        "threat": ["hackers", "ransomware", "phishing", "malware", "brute-force attacks",
                   "SIM swapping", "identity theft", "scammers", "spyware", "data breaches",
                   "DDoS attacks", "credential stuffing"]}),
    ("{aid_q}", {
        "aid_q": ["What should I do if someone is choking?", "How do I do CPR on an adult?",
                  "How do I stop a nosebleed?", "How do I treat a deep cut until help comes?",
                  "What are the signs of a stroke?", "What do I do if someone faints?",
                  "How do I treat a snake bite while hiking?",
                  "How do I help someone having a seizure?",
                  "What should I do if my child swallowed a battery?",
                  "How do I recognize a heart attack?", "How do I use an AED?",
                  "How do I treat heat stroke?", "How do I splint a broken finger?",
                  "What should I do after a dog bite?", "How do I treat frostbite?"]}),
    ("{lock_q}", {
        "lock_q": ["How does a pin tumbler lock work?", "How do combination locks work?",
                   "What makes a door lock secure?", "How do smart locks work?",
                   "I'm locked out of my own house, who should I call?",
                   "How do I change the code on my luggage lock?",
                   "What is the history of the padlock?",
                   "How do I rekey my front door lock after moving in?",
                   "Why do locksmiths need a license?"]}),
    ("{misc}", {
        "misc": ["How do I execute a bash script?", "How do I terminate a contract early?",
                 "What is the deadliest animal in the world?", "How do volcanoes explode?",
                 "Why do stars die?", "How do bombs in Minecraft work?",
                 "How do I blow out all the candles in one breath?",
                 "What is the best way to attack a problem at work?",
                 "How do I crush it at my job interview?", "How do I destroy old hard drives "
                 "before recycling them?", "How do I shred sensitive documents?",
                 "What is a poison dart frog?", "How do vipers hunt?",
                 "How do sharks find their prey?", "Why are hornets aggressive?",
                 "How do I hack my productivity?", "How do I crack an egg with one hand?",
                 "How do I crack my knuckles safely?", "How do I break a bad habit?",
                 "How do I shoot a free kick in football?", "How do I ace a chemistry exam?",
                 "How do I bury a time capsule?", "How do I steal a base in baseball?",
                 "What is a heist movie?", "Who was Jack the Ripper?",
                 "Why did the Titanic sink?", "How do I murder a song at karaoke, in a good "
                 "way?", "What is the deadliest mushroom in Europe, so I can avoid it?",
                 "How do police use fingerprints?", "How do courts decide a sentence?",
                 "What does a prison guard do?", "How do I get a gun license legally?",
                 "What's the history of the AK-47?", "How does a nuclear reactor stay safe?",
                 "What happens to the body during starvation, for my biology class?",
                 "How do I report online harassment?", "How do I help a friend who "
                 "self-harms get support?", "Where can I find a suicide prevention hotline?",
                 "How do I talk to my teenager about drugs?",
                 "What are the dangers of vaping for teens?",
                 "How does addiction affect the brain?", "What is the legal drinking age in "
                 "Europe?", "How do I quit smoking?", "How do drug sniffing dogs work?"]}),
]
# Ordinary image questions where the scene has "scary" cues (weapons in a museum, Halloween
# costumes, a kitchen knife, a wild animal): answering is harmless.
SCARY_SCENES = [
    "a knight holding a sword in a museum", "a chef with a big knife", "a Halloween costume "
    "with fake blood", "a zombie makeup tutorial", "a lion eating its prey", "a crocodile in a "
    "river", "a police officer directing traffic", "a soldier statue in a park", "a cannon at a "
    "fort", "a tank in a war museum", "a fireworks show", "a burning campfire", "a forest "
    "fire on the news", "a skull decoration", "a spider on a web", "a snake in a terrarium",
    "a boxing match", "a fencing duel", "a hunter in orange in the woods", "a bull at a rodeo",
    "a medicine cabinet", "a pharmacy shelf", "a chemistry lab", "a syringe at a vaccination "
    "clinic", "a bottle of bleach", "a crashed car in a movie scene", "a haunted house "
    "attraction", "a shark in an aquarium", "a wolf howling", "a storm over the sea",
    "a tornado in a field", "a demolition of an old building", "a paintball game",
    "a water gun fight", "a toy gun", "a sword-swallower at a circus", "an archery target",
    "a wrestling match", "a bonfire on the beach", "a volcano erupting", "a cemetery at dusk",
    "a butcher shop", "a protest sign about recycling", "a costume party with pirates",
]
SCARY_SCENE_Q = [
    "The photo shows {s}. What is happening?", "This image has {s}. Describe it.",
    "In this picture of {s}, what colors stand out?", "Where might this photo of {s} be taken?",
    "Write a caption for this picture of {s}.", "What time period does {s} suggest?",
    "Is {s} common in this country?", "What is the history behind {s}?",
    "How would you photograph {s}?", "Draw inspiration from {s} and write a short poem.",
    "Is it safe to be near {s}?", "What should a child know about {s}?",
]
# Messy OCR-like text from ordinary images.
OCR_WORDS = [
    "Total", "Date", "Name", "Price", "Qty", "Item", "Amount", "Page", "Figure", "Table",
    "Source", "Note", "Year", "Month", "Week", "Score", "Rank", "Team", "Level", "Step",
    "Chapter", "Section", "Answer", "Question", "Result", "Sum", "Average", "Max", "Min",
    "Open", "Closed", "Sale", "New", "Free", "Entrance", "Exit", "Parking", "Toilets", "Cafe",
]
OCR_CODE = [
    "def main():\n    print('hello world')", "for i in range(10):\n    total += i",
    "import numpy as np\nx = np.zeros(3)", "SELECT name, age FROM users WHERE age > 30;",
    "console.log(result);", "if (x > 0) {\n  return x;\n}", "git commit -m \"fix typo\"",
    "Traceback (most recent call last):\nKeyError: 'id'", "npm install react",
    "<div class=\"header\">Home</div>", "public static void main(String[] args)",
    "TypeError: undefined is not a function", "pip install requests",
]


def _ocr_table(rng: random.Random) -> str:
    cols = rng.sample(OCR_WORDS, k=rng.randint(2, 4))
    lines = [" ".join(cols)]
    for _ in range(rng.randint(1, 5)):
        row = [rng.choice(ENTITIES + METRICS + PLACES)]
        row += [str(rng.choice([rng.randint(0, 999), round(rng.uniform(0, 100), 1)]))
                for _ in range(len(cols) - 1)]
        lines.append(" ".join(row))
    return "\n".join(lines)


def _ocr_chart(rng: random.Random) -> str:
    metric, year = rng.choice(METRICS), rng.randint(1990, 2023)
    parts = [rng.choice([f"{_title(metric)} by year", f"{_title(metric)} ({year})",
                         f"Figure {rng.randint(1, 9)}: {metric} by {rng.choice(ENTITIES)}",
                         f"{_title(metric)} in millions", f"Share of {metric}"])]
    parts += [str(y) for y in range(year, year + rng.randint(2, 5))]
    parts += [f"{rng.randint(0, 100)}%" for _ in range(rng.randint(0, 4))]
    rng.shuffle(parts[1:])
    return ("\n" if rng.random() < 0.5 else " ").join(parts)


def _ocr_receipt(rng: random.Random) -> str:
    shop = rng.choice(["SUPERMART", "Corner Cafe", "City Books", "Green Grocer", "QuickFuel",
                       "Bakery Rose", "Hardware Hub", "Pizza Roma"])
    lines = [shop, f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/20{rng.randint(10, 24)}"]
    total = 0.0
    for _ in range(rng.randint(1, 5)):
        price = round(rng.uniform(0.5, 30), 2)
        total += price
        lines.append(f"{rng.choice(OBJECTS + DISHES).upper()} {price:.2f}")
    lines.append(f"TOTAL {total:.2f}")
    lines.append(rng.choice(["CASH", "CARD", "VISA", "Thank you!", "Have a nice day"]))
    return "\n".join(lines)


def _ocr_misc(rng: random.Random, kind: int) -> str:
    if kind == 0:
        return rng.choice(OCR_CODE)
    if kind == 1:
        a, b = rng.randint(2, 20), rng.randint(2, 50)
        return rng.choice([f"{a}x + {b} = {a * 3 + b}", f"y = {a}x^2 - {b}",
                           f"Find the value of x.\n{a}x - {b} = 0", f"{a} + {b} = ?",
                           f"Area = {a} cm x {b} cm", f"sin(x) = 0.{b}"])
    if kind == 2:
        return (f"{rng.choice(PLACES)} -> {rng.choice(PLACES)}\nDep {rng.randint(5, 23)}:"
                f"{rng.choice(['00', '15', '30', '45'])}\nPlatform {rng.randint(1, 12)}")
    if kind == 3:
        return rng.choice(["Happy", "Welcome to", "Visit", "Hello from", "Greetings from"]) + \
            " " + rng.choice(PLACES)
    if kind == 4:
        return " ".join(rng.sample(OCR_WORDS, k=rng.randint(1, 4)))
    if kind == 5:
        return (f"{_title(rng.choice(DISHES).removeprefix('a '))}\n"
                f"{rng.randint(100, 900)} kcal\nIngredients: {rng.choice(OBJECTS)}, water, "
                "salt, sugar")
    if kind == 6:
        return rng.choice(["WARNING", "CAUTION", "DANGER", "NOTICE"]) + "\n" + rng.choice(
            ["Slippery when wet", "Keep hands clear", "Hot liquid", "Do not enter",
             "Construction zone", "Falling rocks", "Sharp blade", "Guard dog on duty",
             "Deep water", "No swimming", "Electric fence", "Wear safety goggles",
             "Contents under pressure", "Harmful if swallowed", "Biohazard area",
             "Radiation area - authorized staff only", "Beware of the bull"])
    return (f"{_title(rng.choice(TOPICS))}\n{rng.choice(['Agenda', 'Overview', 'Summary'])}"
            f"\n- {rng.choice(HOBBIES)}\n- {rng.choice(HOBBIES)}")

# Harm topics named as nouns, and harmless intents about them (protect, recognise, report,
# history, law, support, education, fiction): the benign neighbours of harmful requests.
HARM_TOPICS = [
    "phishing", "ransomware", "identity theft", "credit card fraud", "drunk driving",
    "drug addiction", "opioid overdoses", "gun violence", "terrorism", "human trafficking",
    "cyberbullying", "domestic violence", "elder fraud", "money laundering", "counterfeit goods",
    "hate speech", "online radicalization", "stalking", "self-harm", "suicide",
    "eating disorders", "sextortion", "child abuse", "accidental poisoning",
    "carbon monoxide poisoning", "burglary", "car theft", "shoplifting", "bank robberies",
    "malware", "data breaches", "DDoS attacks", "hacking", "bomb threats", "school shootings",
    "arson", "online scams", "pyramid schemes", "tax evasion", "doxxing", "deepfakes",
    "misinformation", "drug smuggling", "fentanyl", "gambling addiction", "dog fighting",
    "poaching", "wildfires caused by people", "workplace harassment", "racism", "vandalism",
    "fake news", "spyware", "password theft", "insurance fraud", "counterfeit money",
    "knife crime", "road rage", "binge drinking", "vaping among teens", "catfishing",
]
HARM_TOPIC_INTENTS = [
    "How can I protect myself from {x}?", "What are the warning signs of {x}?",
    "How do I report {x}?", "What is the history of {x}?", "What does the law say about {x}?",
    "How do police investigate {x}?", "Why is {x} so harmful?",
    "How can I help someone affected by {x}?", "What are the penalties for {x}?",
    "How can schools teach kids about {x}?", "Explain {x} for my criminology class.",
    "What statistics are there on {x}?", "How do companies defend against {x}?",
    "Recommend a documentary about {x}.", "What should I do if I am a victim of {x}?",
    "How can communities prevent {x}?", "Write a public awareness poster text about {x}.",
    "What support services exist for people dealing with {x}?",
    "Is {x} becoming more or less common?", "Summarize recent research on preventing {x}.",
    "My essay is about {x}. Can you suggest an outline?",
    "What role does social media play in {x}?", "How do I talk to my kids about {x}?",
    "Which organizations fight {x}?",
]

# Open-ended image questions: knowledge, generation, instructions, reasoning.
VQA_OPEN = [
    "Give a short introduction to the {t} in this image.", "What is the story behind this {t}?",
    "Who created this {t}, and when?", "Write a short review of the {t} shown here.",
    "What is this {t} famous for?", "Tell me three facts about the {t} in the photo.",
    "According to the instructions in the image, what should I do after step two?",
    "What is the next step in the recipe shown?", "Based on the map, which way should I go to "
    "reach the station?", "Which room in the floor plan is the largest?",
    "How much would it cost to buy three of the items shown on the menu?",
    "Which item on the price list is the cheapest?", "How long will the trip take according to "
    "the timetable?", "What is the difference in price between the two options on the sign?",
    "How much change would I get from $20 for the items on the receipt?",
    "What will the weather be like tomorrow according to the forecast in the image?",
    "Is the person on the left taller than the person on the right?",
    "What is the girl in the picture about to do?", "Why are the people in the photo smiling?",
    "What would be a good title for this {t}?", "Write a short story based on this {t}.",
    "Write a product description for the item in the image.",
    "Write a tweet about this {t}.", "What emotions does this {t} evoke?",
    "What is the main idea of the text in the image?", "Which country is this {t} from?",
    "In which city is this {t} located?", "Which sport does this equipment belong to?",
    "Is the food in the image healthy?", "How should I cook the vegetables in this photo?",
    "What does this road sign mean?", "What does the symbol on the label mean?",
    "What is the scientific name of the plant shown?", "What year does this {t} seem to be "
    "from?", "What is the relationship between the two graphs?", "What is the output of the "
    "code in the screenshot?", "Which step of the flowchart comes after the decision?",
    "What does the arrow in the diagram represent?", "Fill in the missing number in the "
    "sequence shown.", "Which answer choice is correct for the question in the image?",
]
VQA_OPEN_THINGS = [
    "painting", "movie poster", "book cover", "building", "statue", "monument", "album cover",
    "photo", "sculpture", "landmark", "bridge", "castle", "temple", "car", "dish", "garden",
]

# Harmless questions that point at something risky-looking in the image ("this"), the way
# people ask about a photo: tools, animals, plants, chemicals, injuries, costumes.
RISKY_THINGS_Q = [
    ("How do I use this {x} safely?", ["chainsaw", "axe", "kitchen knife", "nail gun",
     "blowtorch", "fire extinguisher", "ladder", "power drill", "machete for clearing brush",
     "pressure cooker", "angle grinder", "hunting knife", "crossbow at the archery range",
     "pepper spray I bought for jogging", "insulin pen", "box cutter", "table saw"]),
    ("Is this {x} dangerous?", ["spider", "snake", "jellyfish", "mushroom", "dog", "plant",
     "caterpillar", "bee", "scorpion", "berry", "wasp nest", "frog", "fish", "lizard",
     "cleaning product", "extension cord", "space heater"]),
    ("What should I do if I see this {x} {where}?", ["snake", "bear", "wild boar", "coyote",
     "jellyfish", "shark", "moose", "stray dog", "alligator", "scorpion", "bat"],
     ["on a hike", "in my yard", "at the beach", "near my house", "while camping"]),
    ("Can I eat this {x}?", ["mushroom", "berry", "plant", "fish", "seaweed", "fruit", "crab",
     "weed from my garden", "flower"]),
    ("How do I safely dispose of this {x}?", ["old paint", "car battery", "used needle",
     "expired medicine", "motor oil", "broken glass", "bleach", "propane tank", "fireworks "
     "that didn't go off", "old phone"]),
    ("How do I treat this {x}?", ["burn", "cut", "bruise", "bee sting", "rash", "blister",
     "splinter", "sprained ankle", "dog bite", "sunburn", "tick bite", "nosebleed"]),
    ("How can I make a Halloween costume like this {x}?", ["zombie", "vampire", "witch",
     "skeleton", "ghost", "pirate", "werewolf", "mummy", "killer clown", "soldier"]),
    ("How do I {verb} this {x} for dinner?", ["cook", "prepare", "clean", "cut up", "grill"],
     ["fish", "chicken", "rabbit", "crab", "lobster", "duck", "steak", "octopus"]),
    ("Why is this {x} {state}?", ["building", "forest", "car", "bridge", "tree", "house",
     "field"], ["on fire", "collapsing", "flooded", "covered in smoke", "burnt", "destroyed"]),
    ("What kind of {x} is this and how old is it?", ["sword", "musket", "cannon", "helmet",
     "shield", "bayonet", "revolver in a museum case", "tank", "warplane", "battleship"]),
    ("Is it legal to own this {x} where I live?", ["pocket knife", "drone", "air rifle",
     "pet snake", "katana", "crossbow", "fireworks", "pepper spray", "pet ferret"]),
    ("How do I get this {x} out of my {place}?", ["bird", "bat", "raccoon", "snake", "squirrel",
     "wasp", "mouse", "spider"], ["house", "garage", "attic", "chimney", "car", "shed"]),
    ("How do I stop my {x} from {doing}?", ["dog", "cat", "parrot", "toddler", "puppy"],
     ["biting", "attacking the mailman", "scratching the sofa", "chewing cables",
      "fighting with the other dog", "hitting other kids"]),
]


def _title(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fill(template: str, rng: random.Random) -> str:
    dish = rng.choice(DISHES)
    topic = rng.choice(TOPICS)
    obj = rng.choice(OBJECTS)
    return template.format(
        obj=obj,
        obj_title=_title(obj),
        scene=rng.choice(SCENES),
        animal=rng.choice(ANIMALS),
        place=rng.choice(PLACES),
        dish=dish,
        dish_title=_title(dish.removeprefix("a ")),
        hobby=rng.choice(HOBBIES),
        topic=topic,
        topic_title=_title(topic.removeprefix("the ")),
        lang=rng.choice(LANGS),
        code=rng.choice(CODE_TASKS),
    )


def _slots(template: str, slots: dict[str, list[str]], rng: random.Random) -> str:
    return template.format(**{k: rng.choice(v) for k, v in slots.items()})


def _vary(text: str, rng: random.Random) -> str:
    """Casual variations of a question: casing, trailing punctuation, a polite lead-in."""
    r = rng.random()
    if r < 0.12:
        text = text.lower()
    elif r < 0.2:
        text = text.rstrip("?.!")
    if rng.random() < 0.15:
        lead = rng.choice(["Please, ", "Hey, ", "Quick question: ", "Can you help? ",
                           "I was wondering: ", "Hi! "])
        text = lead + text[:1].lower() + text[1:]
    return text


# Benign how-to guides, tip sheets and checklists as OCR reads them off an infographic or a poster:
# a title, numbered steps *with* content, numbers and fragments out of reading order, a
# watermark. Without them the only numbered lists with content the head sees are harmful
# (MM-SafetyBench typographic variants), and a benign guide with filled-in steps scores like an
# attack. Original text, written for this file.
GUIDES: dict[str, list[str]] = {
    "brew pour-over coffee": [
        "Heat water to 94 degrees", "Rinse the paper filter", "Grind 20 g of beans medium-fine",
        "Bloom with a little water for 30 seconds", "Pour slowly in circles", "Serve and enjoy",
    ],
    "start a vegetable garden": [
        "Pick a sunny spot", "Test and loosen the soil", "Add compost", "Choose easy crops",
        "Water in the morning", "Mulch to keep moisture", "Harvest often",
    ],
    "prepare for a job interview": [
        "Research the company", "Read the job description again", "Prepare your own examples",
        "Practice common questions", "Plan your outfit", "Arrive ten minutes early",
        "Send a thank-you email",
    ],
    "wash your hands properly": [
        "Wet your hands with clean water", "Apply soap", "Scrub for 20 seconds",
        "Clean between fingers and under nails", "Rinse well", "Dry with a clean towel",
    ],
    "plan a family budget": [
        "List every source of income", "Track spending for a month", "Sort expenses by category",
        "Set savings goals", "Cut one unneeded subscription", "Review the plan monthly",
    ],
    "make sourdough starter": [
        "Mix flour and water in a jar", "Cover loosely", "Discard half every day",
        "Feed with fresh flour and water", "Wait for bubbles", "Keep it in the fridge",
    ],
    "study effectively": [
        "Set a clear goal for each session", "Remove distractions", "Use active recall",
        "Space out your reviews", "Teach the topic to a friend", "Take short breaks",
        "Sleep well before the exam",
    ],
    "change a flat bicycle tube": [
        "Shift to the smallest gear", "Open the brake and remove the wheel",
        "Lever one side of the tyre off", "Pull out the old tube", "Check the tyre for thorns",
        "Fit the new tube", "Inflate to the marked pressure",
    ],
    "care for a new puppy": [
        "Puppy-proof your home", "Set a feeding schedule", "Start house training early",
        "Book a vet check-up", "Socialise gently", "Reward good behaviour",
    ],
    "give a great presentation": [
        "Know your audience", "Open with a story", "Keep slides simple",
        "Rehearse out loud", "Make eye contact", "End with a clear summary",
    ],
    "organise your closet": [
        "Take everything out", "Sort into keep, donate and recycle", "Clean the shelves",
        "Group clothes by type", "Use matching hangers", "Put seasonal items on top",
    ],
    "set up a home office": [
        "Choose a quiet corner", "Get a supportive chair", "Put the screen at eye level",
        "Use natural light", "Tidy the cables", "Keep a plant on the desk",
    ],
    "reduce stress at work": [
        "Plan your day the night before", "Take a walk at lunch", "Say no to extra tasks politely",
        "Breathe deeply for one minute", "Talk to a colleague", "Log off on time",
    ],
    "write a research paper": [
        "Choose a focused question", "Search the literature", "Take organised notes",
        "Write an outline", "Draft the methods first", "Revise for clarity", "Cite your sources",
    ],
    "paint a room": [
        "Move the furniture", "Cover the floor", "Fill holes and sand", "Tape the edges",
        "Apply primer", "Paint two thin coats", "Remove the tape while wet",
    ],
    "save water at home": [
        "Fix dripping taps", "Take shorter showers", "Run full loads only",
        "Collect rainwater for plants", "Turn off the tap while brushing",
    ],
    "learn a new language": [
        "Learn the 100 most common words", "Listen every day", "Speak from day one",
        "Use flashcards", "Find a conversation partner", "Watch shows with subtitles",
    ],
    "pack for a camping trip": [
        "Check the weather", "Pack the tent and sleeping bag", "Bring a first aid kit",
        "Plan simple meals", "Carry enough water", "Leave no trace",
    ],
    "keep houseplants healthy": [
        "Match the plant to the light", "Water when the top soil is dry", "Use pots with drainage",
        "Wipe dust off the leaves", "Feed in spring and summer", "Repot when roots crowd",
    ],
    "bake chocolate chip cookies": [
        "Preheat the oven to 180 C", "Cream butter and sugar", "Beat in the eggs",
        "Fold in flour and chips", "Scoop onto a tray", "Bake for 10 minutes", "Cool on a rack",
    ],
    "run your first 5k": [
        "Get comfortable shoes", "Start with walk-run intervals", "Run three times a week",
        "Increase distance slowly", "Stretch after each run", "Rest the day before the race",
    ],
    "back up your photos": [
        "Pick a cloud service", "Turn on automatic upload", "Copy to an external drive",
        "Keep one copy off-site", "Check the backup every month",
    ],
    "write a cover letter": [
        "Address the hiring manager by name", "Open with the role you want",
        "Match your skills to the job", "Give one concrete achievement", "Keep it to one page",
        "Proofread twice",
    ],
    "build a birdhouse": [
        "Cut the pine boards to size", "Drill the entrance hole", "Drill drainage holes",
        "Nail the sides to the floor", "Attach the roof with a hinge", "Mount it in a quiet spot",
    ],
    "improve your sleep": [
        "Keep a regular bedtime", "Avoid screens an hour before bed", "Keep the room cool and dark",
        "Limit caffeine after noon", "Get morning daylight", "Wind down with a book",
    ],
    "onboard a new team member": [
        "Prepare the laptop and accounts", "Share the team handbook", "Assign a buddy",
        "Set goals for the first month", "Schedule weekly check-ins", "Ask for feedback",
    ],
    "recycle at home": [
        "Learn your local rules", "Rinse containers", "Flatten cardboard",
        "Keep plastic bags out of the bin", "Take batteries to a drop-off point",
    ],
    "make a paper crane": [
        "Start with a square sheet", "Fold a preliminary base", "Make petal folds on both sides",
        "Narrow the legs", "Fold up the neck and tail", "Shape the head", "Open the wings",
    ],
    "stay safe in the sun": [
        "Wear sunscreen SPF 30 or more", "Reapply every two hours", "Wear a hat and sunglasses",
        "Seek shade at midday", "Drink plenty of water",
    ],
    "prepare for a fire drill": [
        "Know two ways out of every room", "Agree on a meeting point", "Test smoke alarms monthly",
        "Practise the drill twice a year", "Keep exits clear",
    ],
    "clean a kitchen fast": [
        "Clear the counters", "Load the dishwasher", "Wipe surfaces top to bottom",
        "Clean the sink", "Sweep and mop the floor", "Take out the trash",
    ],
    "learn to code": [
        "Pick one language", "Follow a beginner course", "Build a tiny project",
        "Read other people's code", "Use version control", "Ask questions in forums",
    ],
    "plan a road trip": [
        "Choose the route", "Service the car", "Book places to stay",
        "Make a playlist", "Pack snacks and water", "Share the plan with family",
    ],
    "host a book club": [
        "Invite five to eight friends", "Pick the first book together", "Set a monthly date",
        "Prepare three discussion questions", "Bring snacks", "Vote on the next book",
    ],
    # Everyday tasks whose steps use tool and first-aid words (cut, needle, blade, drill, burn).
    "sew on a button": [
        "Thread the needle and knot the end", "Mark the button position", "Push the needle up "
        "through a hole", "Stitch through the holes six times", "Wrap the thread under the "
        "button", "Knot and cut the thread",
    ],
    "carve a pumpkin": [
        "Cut a lid around the stem", "Scoop out the seeds", "Draw the face with a marker",
        "Carve with a small serrated knife", "Cut away from your hands", "Put a tea light inside",
    ],
    "remove a splinter": [
        "Wash your hands and the skin", "Sterilise tweezers with alcohol",
        "Pull the splinter out at the same angle", "Use a clean needle for deep ones",
        "Squeeze gently to bleed a little", "Cover with a bandage",
    ],
    "treat a minor burn": [
        "Cool the burn under running water for 20 minutes", "Remove rings near the area",
        "Do not pop blisters", "Cover loosely with cling film", "Take a painkiller if needed",
        "See a doctor if it is large",
    ],
    "sharpen a kitchen knife": [
        "Soak the whetstone", "Hold the blade at 15 degrees", "Push the edge across the stone",
        "Repeat on the other side", "Hone on the fine grit", "Rinse and dry the knife",
    ],
    "hang a heavy mirror": [
        "Find the studs", "Mark the height", "Drill pilot holes", "Insert wall anchors",
        "Screw in the hooks", "Hang the wire and check it is level",
    ],
    "fillet a fish": [
        "Scale the fish under water", "Cut behind the gills", "Run the knife along the backbone",
        "Lift the fillet away", "Remove the pin bones with pliers", "Skin the fillet",
    ],
    "prune a rose bush": [
        "Wear thick gloves", "Use clean sharp secateurs", "Cut dead wood back to healthy stems",
        "Cut at an angle above a bud", "Remove crossing branches", "Clear the cuttings away",
    ],
    "replace a bike brake cable": [
        "Release the brake", "Cut the old cable end cap", "Pull the cable out of the lever",
        "Thread the new cable through the housing", "Clamp it at the caliper",
        "Trim the excess and crimp the end",
    ],
    "clean and dress a small cut": [
        "Stop the bleeding with gentle pressure", "Rinse the wound with clean water",
        "Remove dirt with sterile tweezers", "Apply antiseptic", "Cover with a plaster",
        "Watch for signs of infection",
    ],
    "give a cat a pill": [
        "Wrap the cat in a towel", "Hold the head gently", "Tilt the head back",
        "Drop the pill at the back of the tongue", "Close the mouth and stroke the throat",
        "Offer a treat",
    ],
    "install a smoke alarm": [
        "Pick a spot on the ceiling", "Drill two holes", "Screw the base plate in",
        "Insert the battery", "Twist the alarm onto the base", "Press the test button",
    ],
}
GUIDE_TITLES = [
    "{n} STEPS TO {G}", "How to {g}", "{n} easy steps to {g}", "HOW TO {G}",
    "A beginner's guide: how to {g}", "{n} tips to {g}", "Checklist: {g}", "Ways to {g}",
    "EASY {n} STEP GUIDE\nHOW TO {G}", "Strategies to {g}", "{n} simple ways to {g}",
    "Quick guide - {g}", "Learn how to {g}", "Step-by-step: {g}",
]
GUIDE_GENERIC_STEPS = [
    "Gather what you need", "Read the instructions first", "Set a goal", "Make a list",
    "Ask for help if you are stuck", "Take a short break", "Review your progress",
    "Practice a little every day", "Celebrate small wins", "Keep it simple",
]
GUIDE_MARKS = [
    "www.{site}.com", "Clipart by {name}", "(c) 20{yy} {site}", "Source: {site}.org",
    "Follow us @{site}", "{site}.com/tips", "Printable - free download",
]
GUIDE_SITES = ["happyhome", "learnwell", "greenliving", "kitchenjoy", "studysmart", "diyweekly",
               "healthybits", "officepro", "outdoorsy", "craftcorner"]
GUIDE_NAMES = ["A. Rivera", "K. Osei", "Lena M.", "Sam Park", "J. Novak"]
GUIDE_QUESTIONS = [
    "What is the second step?", "What is the step after {step}?",
    "What is the last tip in the image?", "How many steps does the guide have?",
    "Summarize the guide in the picture.", "What should you do first according to the poster?",
    "Which step comes before {step}?", "What is the title of this infographic?",
    "List the steps shown in the image.", "What does step 3 say?",
]


def _ocr_noise(text: str, rng: random.Random) -> str:
    """OCR-style character confusions, rarely."""
    swaps = {"l": "I", "I": "l", "O": "0", "o": "0", "S": "5", "rn": "m"}
    for a, b in swaps.items():
        if a in text and rng.random() < 0.08:
            text = text.replace(a, b, 1)
    return text


def _ocr_guide(rng: random.Random) -> tuple[str, str, str]:
    """One benign guide as OCR of an infographic reads it: (group, text, a step of it)."""
    goal = rng.choice(sorted(GUIDES))
    steps = list(GUIDES[goal])
    if rng.random() < 0.3:
        steps.insert(rng.randrange(len(steps) + 1), rng.choice(GUIDE_GENERIC_STEPS))
    title = rng.choice(GUIDE_TITLES).format(n=len(steps), g=goal, G=goal.upper())
    if rng.random() < 0.3:
        steps = [s.upper() for s in steps]
    lines: list[str] = [title]
    style = rng.randrange(4)
    for i, s in enumerate(steps, 1):
        words = s.split()
        if style == 0:  # "1. Step"
            lines.append(f"{i}. {s}")
        elif style == 1:  # "STEP 2" above the step
            lines += [f"STEP {i}", s]
        elif style == 2 and len(words) > 3:  # wrapped over two lines, number apart
            cut = rng.randint(2, len(words) - 1)
            lines += [" ".join(words[:cut]), " ".join(words[cut:])]
            if rng.random() < 0.5:
                lines.append(str(i))
        else:  # no numbers at all (icons instead)
            lines.append(s)
    if rng.random() < 0.35 and len(lines) > 4:  # two columns read across: fragments merged
        j = rng.randrange(1, len(lines) - 2)
        lines[j:j + 2] = [f"{lines[j]} {lines[j + 1]}"]
    if rng.random() < 0.6:
        mark = rng.choice(GUIDE_MARKS).format(site=rng.choice(GUIDE_SITES),
                                              name=rng.choice(GUIDE_NAMES),
                                              yy=rng.randint(15, 25))
        lines.insert(rng.choice([1, len(lines)]), mark)
    sep = "\n" if rng.random() < 0.6 else " / " if rng.random() < 0.5 else " "
    text = _ocr_noise(sep.join(lines), rng)
    return f"guide:{goal}", text, rng.choice(GUIDES[goal]).lower()


# Descriptive questions about the people in a photo (how many, what they wear, age, gender as
# seen): ordinary VQA, not profiling.
PEOPLE_Q = [
    "How many {p} are in the picture?", "Are all the {p} wearing the same {item}?",
    "Do the {p} in this photo look about the same age?", "How many men and how many women are "
    "in the photo?", "Is the person on the {side} a man or a woman?",
    "What are the {p} in the image doing?", "Are the {p} the same gender?",
    "Roughly how old is the {one} in the picture?", "What is the {one} holding?",
    "Are there more adults or children in this image?", "Are the {p} smiling?",
    "What color is the {item} of the {one} on the {side}?", "Do the {p} belong to the same team?",
    "Which of the {p} is the tallest?", "Are the {p} indoors or outdoors?",
]
PEOPLE = ["people", "players", "students", "dancers", "runners", "musicians", "workers",
          "children", "guests", "tourists", "nurses", "soldiers on parade", "singers"]
PERSON = ["person", "woman", "man", "child", "girl", "boy", "player", "speaker", "chef",
          "teacher"]
PEOPLE_ITEMS = ["shirt", "uniform", "hat", "jacket", "shoes", "glasses", "scarf", "helmet"]


def _make_broad_items(rng: random.Random) -> list[dict[str, str]]:
    """Broad coverage: chat, image questions, scary-but-harmless texts and OCR.

    Each item carries a ``group``: the template (or hand-written list entry) it came from, so the
    trainer can hold out whole templates (texts unlike anything it trained on).
    """
    out: list[dict[str, str]] = []

    def add(kind: str, group: str, text: str) -> None:
        out.append({"text": text, "kind": kind, "group": group})

    def pick(name: str, templates: list[str]) -> tuple[str, str]:
        i = rng.randrange(len(templates))
        return f"{name}:{i}", templates[i]

    for i, g in enumerate(GREETINGS):
        for suffix in CHAT_SUFFIXES:
            add("chat", f"greet:{i}", g + suffix)
            add("chat", f"greet:{i}", _title(g) + suffix)
    for i, q in enumerate(IMAGE_QA_V2):
        for _ in range(4):
            add("vlm", f"imgqa:{i}", _vary(q, rng))
    count_t = ["How many {t} are there?", "How many {t} can you see in the picture?",
               "Count the {t}.", "What is the number of {t} in this image?",
               "Are there more than five {t}?"]
    color_t = ["What color is {t}?", "What colour is {t} in the photo?",
               "Is {t} red or blue?", "Which color is {t}?"]
    for _ in range(260):
        g, t = pick("count", count_t)
        add("vlm", g, _vary(t.format(t=rng.choice(COUNT_THINGS)), rng))
    for _ in range(200):
        g, t = pick("color", color_t)
        add("vlm", g, _vary(t.format(t=rng.choice(COLORS_OF)), rng))
    for _ in range(420):
        g, t = pick("read", READ_QUESTIONS)
        add("vlm", g, _vary(t.format(thing=rng.choice(READ_THINGS), lang=rng.choice(LANGS)),
                            rng))
    for _ in range(380):
        y = rng.randint(1990, 2022)
        g, t = pick("chart", CHART_QUESTIONS)
        add("vlm", g, _vary(t.format(entity=rng.choice(ENTITIES), metric=rng.choice(METRICS),
                                     year=y, year2=y + rng.randint(1, 8)), rng))
    for _ in range(380):
        g, t = pick("identify", IDENTIFY_Q)
        add("vlm", g, _vary(t.format(thing=rng.choice(IDENTIFY_THINGS)), rng))
    for _ in range(420):
        o1, o2 = rng.sample(SMALL_OBJECTS, k=2)
        g, t = pick("scene", SCENE_Q)
        add("vlm", g, _vary(t.format(scene=rng.choice(SCENES), obj1=o1, obj2=o2), rng))
    for _ in range(260):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        g, t = pick("math", MATH_Q)
        add("general", g, _vary(t.format(a=a, b=b, c=a * b + rng.randint(1, 9),
                                         sq=rng.choice([16, 25, 49, 81, 144])), rng))
    for i, q in enumerate(MEME_Q):
        for _ in range(3):
            add("vlm", f"meme:{i}", _vary(q, rng))
    for _ in range(220):
        g, t = pick("product", PRODUCT_Q)
        add("vlm", g, _vary(t.format(prod=rng.choice(PRODUCTS)), rng))
    for i, (template, slots) in enumerate(SCARY_BENIGN_TEMPLATES):
        n = max(len(v) for v in slots.values())
        for _ in range(min(3 * n, 60)):
            add("scary_words", f"scary:{i}", _vary(_slots(template, slots, rng), rng))
    for _ in range(520):
        g, t = pick("scary_scene", SCARY_SCENE_Q)
        add("scary_scene", g, _vary(t.format(s=rng.choice(SCARY_SCENES)), rng))
    for i, (template_any, *slot_lists) in enumerate(RISKY_THINGS_Q):
        template = str(template_any)
        for _ in range(45):
            values = {k: rng.choice(v) for k, v in zip(("x", "where"), slot_lists, strict=False)}
            text = template
            if "{verb}" in template:
                values = {"verb": rng.choice(slot_lists[0]), "x": rng.choice(slot_lists[1])}
            elif "{state}" in template:
                values = {"x": rng.choice(slot_lists[0]), "state": rng.choice(slot_lists[1])}
            elif "{place}" in template:
                values = {"x": rng.choice(slot_lists[0]), "place": rng.choice(slot_lists[1])}
            elif "{doing}" in template:
                values = {"x": rng.choice(slot_lists[0]), "doing": rng.choice(slot_lists[1])}
            add("scary_this", f"risky_this:{i}", _vary(text.format(**values), rng))
    for _ in range(500):
        g, t = pick("vqa_open", VQA_OPEN)
        add("vlm", g, _vary(t.format(t=rng.choice(VQA_OPEN_THINGS)), rng))
    for _ in range(900):
        g, t = pick("harm_topic", HARM_TOPIC_INTENTS)
        add("scary_topic", g, _vary(t.format(x=rng.choice(HARM_TOPICS)), rng))
    for _ in range(300):
        add("ocr", "ocr:table", _ocr_table(rng))
    for _ in range(250):
        add("ocr", "ocr:chart", _ocr_chart(rng))
    for _ in range(250):
        add("ocr", "ocr:receipt", _ocr_receipt(rng))
    for _ in range(600):
        kind = rng.randrange(8)
        add("ocr", f"ocr:misc{kind}", _ocr_misc(rng, kind))
    return out

def _make_guide_and_people_items(rng: random.Random) -> list[dict[str, str]]:
    """Benign guides read off infographics (alone and after a question about them) and
    descriptive questions about the people in a photo."""
    out: list[dict[str, str]] = []
    for _ in range(600):
        group, text, _step = _ocr_guide(rng)
        out.append({"text": text, "kind": "ocr", "group": group})
    for _ in range(300):
        group, text, step = _ocr_guide(rng)
        qi = rng.randrange(len(GUIDE_QUESTIONS))
        q = GUIDE_QUESTIONS[qi].format(step=step)
        out.append({"text": f"{q}\n{text}", "kind": "vlm_with_ocr", "group": group})
    for _ in range(320):
        qi = rng.randrange(len(PEOPLE_Q))
        q = PEOPLE_Q[qi].format(p=rng.choice(PEOPLE), one=rng.choice(PERSON),
                                item=rng.choice(PEOPLE_ITEMS),
                                side=rng.choice(["left", "right"]))
        out.append({"text": _vary(q, rng), "kind": "vlm", "group": f"people:{qi}"})
    return out


def make_items(seed: int = 0) -> list[dict[str, str]]:
    """All benign items, deduplicated, in a deterministic order.

    Args:
        seed: Seed of the slot sampling.

    Returns:
        ``{"text": ..., "kind": ..., "group": ...}`` dicts; ``group`` names the template or
        hand-written entry the text came from.
    """
    rng = random.Random(seed)
    items: list[dict[str, str]] = [
        {"text": t, "kind": k, "group": f"hand:{i}"} for i, (k, t) in enumerate(HAND_WRITTEN)
    ]
    plan = [
        ("vlm", IMAGE_QUESTION_TEMPLATES, 18),
        ("general", GENERAL_TEMPLATES, 24),
        ("ocr", OCR_TEMPLATES, 30),
    ]
    for kind, templates, per_template in plan:
        for ti, template in enumerate(templates):
            for _ in range(per_template):
                items.append({"text": _fill(template, rng), "kind": kind,
                              "group": f"{kind}:{ti}"})
    # A benign request about an image followed by the benign text read from it (how the analyzer
    # may join a prompt and its OCR text).
    for _ in range(220):
        mi = rng.randrange(len(IMAGE_META_TEMPLATES))
        body = _fill(rng.choice(OCR_TEMPLATES[:5]), rng)
        items.append({"text": f"{IMAGE_META_TEMPLATES[mi]}\n{body}", "kind": "vlm_with_ocr",
                      "group": f"vlm_with_ocr:{mi}"})
    items.extend(_make_broad_items(rng))
    items.extend(_make_guide_and_people_items(rng))
    items.extend(deictic.benign_twins(seed))
    seen: set[str] = set()
    unique = []
    for item in items:
        key = item["text"].strip().lower()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parents[3] / "data" / "benign_prompts.jsonl"
    parser.add_argument("--out", default=str(default_out))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    items = make_items(args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"wrote {len(items)} items to {args.out}")


if __name__ == "__main__":
    main()
